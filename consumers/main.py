"""Run stages (and the poller) in this process: `pm run validation`, `pm run poller`, `pm run all`.

One FastStream broker per process carries one batch subscriber per stage; beside each, a claim task
takes over entries of dead consumers; one more task subscribes a stage again when its subscriber stopped
(its group was gone: Redis lost its data); the poller runs as one more task when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from faststream.redis import RedisBroker, RedisClusterBroker

from consumers.bootstrap import open_stage_context
from consumers.context import StageContext
from consumers.poller import run_poller
from consumers.runtime import StageRunner, keep_subscribed, subscribe
from pm.config.redis_url import is_cluster_url, parse_cluster_url
from pm.config.settings import Settings
from pm.config.topology import Topology
from pm.redis import streams

log = logging.getLogger("pm.consumers")

# A task that does not stop within the shutdown grace is cancelled, then waited for this long at most.
TASK_CANCEL_TIMEOUT_S = 5.0


def make_broker(redis_url: str, graceful_timeout_s: float) -> RedisBroker:
    """FastStream's broker for `redis_url`: its cluster broker (FastStream >= 0.7) for a cluster URL, which
    reads each stage's stream with XREADGROUP from the node holding the stream's slot."""
    options: dict[str, Any] = {"graceful_timeout": graceful_timeout_s, "logger": None, "apply_types": False}
    if not is_cluster_url(redis_url):
        return RedisBroker(redis_url, **options)
    parsed = parse_cluster_url(redis_url)
    (first_host, first_port), *others = parsed.nodes
    return RedisClusterBroker(
        f"{'rediss' if parsed.ssl else 'redis'}://{first_host}:{first_port}",
        startup_nodes=others,
        username=parsed.username,
        password=parsed.password,
        **options,
    )


@contextlib.asynccontextmanager
async def running_stages(
    context: StageContext, redis_url: str, stage_names: list[str], with_poller: bool
) -> AsyncIterator[list[StageRunner]]:
    """Start the stages' subscribers, claim loops and (optionally) the poller; stop them on exit.

    Stopping (SIGTERM, or the block's end), within `context.shutdown_grace_s` (PM_SHUTDOWN_GRACE_S):
    no new reads; the batch in flight commits and acknowledges (every stage's, the claim loops', the
    poller's round); then every entry this process still has pending is handed back (marked idle, so a
    live consumer claims it at its next claim round, not claim_idle_ms later)."""
    await streams.ensure_groups(context.redis, context.topology)
    runners = [StageRunner(context.topology.stage(name), context) for name in stage_names]
    # apply_types=False: our handlers take the raw entries (see `subscribe`), so FastStream's dependency
    # injection, which resolves its context in a worker thread on every batch, has nothing to do.
    broker = make_broker(redis_url, context.shutdown_grace_s) if runners else None
    subscribers = [(runner.stage, subscribe(broker, runner)) for runner in runners if broker is not None]
    stop = asyncio.Event()  # ends the claim loops, the poller and the resubscriber at their next wait
    tasks = [asyncio.create_task(runner.claim_forever(stop), name=f"claim-{runner.stage.name}") for runner in runners]
    if with_poller:
        tasks.append(asyncio.create_task(run_poller(context, stop), name="poller"))
    resubscriber = None
    if broker is not None:
        await broker.start()
        watch = keep_subscribed(context.redis, context.topology, subscribers, stop)
        resubscriber = asyncio.create_task(watch, name="resubscribe")
    log.info("stages running", extra={"stages": ",".join(stage_names), "poller": with_poller})
    try:
        yield runners
    finally:
        await _stop(context, broker, resubscriber, runners, tasks, stop)


async def _stop(
    context: StageContext,
    broker: RedisBroker | None,
    resubscriber: asyncio.Task[None] | None,
    runners: list[StageRunner],
    tasks: list[asyncio.Task[None]],
    stop: asyncio.Event,
) -> None:
    """Stop within the shutdown grace: reads first, then what is in flight, then hand back the rest.
    The resubscriber ends before the broker stops, so it cannot start a subscriber the broker just stopped."""
    deadline_s = time.monotonic() + context.shutdown_grace_s
    stop.set()
    if resubscriber is not None:
        tasks = [resubscriber, *tasks]  # cancelled below with the others if it does not end in time
        await asyncio.wait([resubscriber], timeout=_left_s(deadline_s))
    if broker is not None:
        # No new reads; waits (up to the grace) for the batch a subscriber is handling.
        await broker.stop()
    _, running = await asyncio.wait(tasks, timeout=_left_s(deadline_s)) if tasks else (set(), set())
    for task in running:  # still in a round after the grace: cancel it
        task.cancel()
    if running:
        # Bounded: a task that swallowed its cancellation must not hang the process's exit.
        _, stuck = await asyncio.wait(running, timeout=TASK_CANCEL_TIMEOUT_S)
        if stuck:
            log.error("tasks did not stop when cancelled", extra={"tasks": ",".join(t.get_name() for t in stuck)})
    for runner in runners:
        await runner.drain(_left_s(deadline_s))
    for runner in runners:
        try:
            await runner.hand_back()
        except Exception as exc:  # Redis away: the entries are claimed after claim_idle_ms, as after a crash
            log.error("could not hand back pending entries", extra={"stage": runner.stage.name, "error": repr(exc)})


def _left_s(deadline_s: float) -> float:
    return max(deadline_s - time.monotonic(), 0.0)


async def run_stages(
    database_url: str,
    redis_url: str,
    ledger_url: str,
    stage_names: list[str],
    with_poller: bool,
    topology: Topology | None = None,
    settings: Settings | None = None,
) -> None:
    """Runs until cancelled (SIGTERM / Ctrl-C)."""
    async with open_stage_context(database_url, redis_url, ledger_url, topology, settings) as context:
        await _run_forever(context, redis_url, stage_names, with_poller)


async def _run_forever(context: StageContext, redis_url: str, stage_names: list[str], with_poller: bool) -> None:
    async with running_stages(context, redis_url, stage_names, with_poller):
        await asyncio.Event().wait()  # meant to run forever
