"""Run stages (and the poller) in this process: `pm run validation`, `pm run poller`, `pm run all`.

One FastStream broker per process carries one batch subscriber per stage; beside each, a claim task
takes over entries of dead consumers; the poller runs as one more task when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from faststream.redis import RedisBroker

from consumers.bootstrap import open_stage_context
from consumers.context import StageContext
from consumers.poller import run_poller
from consumers.runtime import StageRunner, subscribe
from pm.config.settings import Settings
from pm.config.topology import Topology
from pm.redis import streams

TASK_STOP_TIMEOUT_S = 10.0
log = logging.getLogger("pm.consumers")

GRACEFUL_TIMEOUT_S = 30.0  # a batch in flight at shutdown gets this long to commit and ack


@contextlib.asynccontextmanager
async def running_stages(
    context: StageContext, redis_url: str, stage_names: list[str], with_poller: bool
) -> AsyncIterator[list[StageRunner]]:
    """Start the stages' subscribers, claim loops and (optionally) the poller; stop them on exit."""
    await streams.ensure_groups(context.redis, context.topology)
    runners = [StageRunner(context.topology.stage(name), context) for name in stage_names]
    # apply_types=False: our handlers take the raw entries (see `subscribe`), so FastStream's dependency
    # injection, which resolves its context in a worker thread on every batch, has nothing to do.
    broker = (
        RedisBroker(redis_url, graceful_timeout=GRACEFUL_TIMEOUT_S, logger=None, apply_types=False) if runners else None
    )
    for runner in runners:
        assert broker is not None
        subscribe(broker, runner)
    stop = asyncio.Event()  # ends the claim loops and the poller at their next wait
    tasks = [asyncio.create_task(runner.claim_forever(stop), name=f"claim-{runner.stage.name}") for runner in runners]
    if with_poller:
        tasks.append(asyncio.create_task(run_poller(context, stop), name="poller"))
    if broker is not None:
        await broker.start()
    log.info("stages running", extra={"stages": ",".join(stage_names), "poller": with_poller})
    try:
        yield runners
    finally:
        if broker is not None:
            await broker.stop()
        stop.set()
        _, running = await asyncio.wait(tasks, timeout=TASK_STOP_TIMEOUT_S) if tasks else (set(), set())
        for task in running:  # in the middle of a round: cancel it
            task.cancel()
        if running:
            # Bounded: a task that swallowed its cancellation must not hang the process's exit.
            _, stuck = await asyncio.wait(running, timeout=TASK_STOP_TIMEOUT_S)
            if stuck:
                log.error("tasks did not stop when cancelled", extra={"tasks": ",".join(t.get_name() for t in stuck)})


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
