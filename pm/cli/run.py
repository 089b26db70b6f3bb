"""`pm run NAME`: one Procfile process type (or `all` of them) in this process, until cancelled.

NAME may also group stages and the poller, comma-separated (`validation,fees,limits`), or be `stages`
(every stage and the poller): one process, one broker, each stage still a consumer group of its own.

The gateway is gateway/app.py's `run_gateway`; the stages, the poller and the outbox worker are built by
the consumers' composition root (consumers/bootstrap.py); `psp-sim` is the development simulator and
`edge-auth` the development stand-in for the Auth Center's auth_request endpoint (pm/dev/edge_auth.py).
"""

from __future__ import annotations

import argparse
import asyncio

from pm.config.settings import Settings
from pm.config.topology import load_topology

PROCESS_TYPES = (
    "gateway", "validation", "fees", "limits", "dispatch", "settlement", "history", "poller",
    "ipps-connector", "qp-connector", "outbox", "psp-sim", "edge-auth", "stages", "all",
)  # fmt: skip
PROCESS_HELP = (
    f"one of {', '.join(PROCESS_TYPES)}; or stages and the poller together, comma-separated "
    "(validation,fees,limits): one process, each stage still a consumer group of its own"
)
# Process types that may share a process, comma-separated: each is a consumer group (or the poller).
GROUPABLE_TYPES = ("validation", "fees", "limits", "dispatch", "settlement", "history", "poller",
                   "ipps-connector", "qp-connector")  # fmt: skip
# Development stand-ins for services outside PM: they use none of PM's servers.
STAND_INS = ("psp-sim", "edge-auth")


def process_type(text: str) -> str:
    """argparse's check of `pm run TYPE`: a Procfile type, `all`, `stages`, or a comma-separated group."""
    names = text.split(",")
    if len(names) == 1 and text in PROCESS_TYPES:
        return text
    if len(names) > 1 and all(name in GROUPABLE_TYPES for name in names) and len(set(names)) == len(names):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: {PROCESS_HELP}")


async def run_process(name: str, settings: Settings, database_url: str, redis_url: str, ledger_url: str) -> None:
    """Run one Procfile process type (or `all` of them, or a comma-separated group of stages) until cancelled."""
    from consumers.bootstrap import run_outbox_process
    from consumers.main import run_stages
    from gateway.app import run_gateway
    from pm.config.garbage_collection import tune_garbage_collector
    from pm.config.metrics import serve_metrics

    topology = load_topology(settings.streams_file)
    names = name.split(",")
    if len(names) > 1:
        unknown = [n for n in names if n not in (*topology.stages, "poller")]
        if unknown:
            raise ValueError(f"only stages and the poller run together; not {', '.join(unknown)}")
    elif name not in (*PROCESS_TYPES, *topology.stages):
        raise ValueError(f"unknown process type {name!r}; one of: {', '.join(PROCESS_TYPES)}")
    urls = {"database_url": database_url, "redis_url": redis_url, "ledger_url": ledger_url}
    tune_garbage_collector()  # after the imports above: they are what it freezes
    if name == "gateway":
        await run_gateway(settings, **urls)
        return
    if settings.metrics_port is not None:  # `all` also on its gateway's /metrics: one registry, two doors
        serve_metrics(settings.metrics_port)
    if name == "psp-sim":  # a stand-in for the PSPs: it needs none of the servers
        from pm.dev.psp_sim import run_psp_sim

        await run_psp_sim(settings)
        return
    if name == "edge-auth":  # a stand-in for the Auth Center's auth_request endpoint: no server either
        from pm.dev.edge_auth import run_edge_auth

        await run_edge_auth(settings)
        return
    if name == "outbox":
        await run_outbox_process(settings, database_url, redis_url, topology)
        return
    stage_names = list(topology.stages) if name in ("all", "stages") else [n for n in names if n != "poller"]
    with_poller = name in ("stages", "all") or "poller" in names
    stages = run_stages(**urls, stage_names=stage_names, with_poller=with_poller, topology=topology,
                        settings=settings)  # fmt: skip
    if name == "all":
        await asyncio.gather(
            run_gateway(settings, **urls), stages, run_outbox_process(settings, database_url, redis_url, topology)
        )
    else:
        await stages
