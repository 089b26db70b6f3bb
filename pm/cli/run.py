"""`pm run NAME`: one Procfile process type (or `all` of them) in this process, until cancelled.

The gateway is gateway/app.py's `run_gateway`; the stages, the poller and the outbox worker are built by
the consumers' composition root (consumers/bootstrap.py); `psp-sim` is the development simulator and
`edge-auth` the development stand-in for the Auth Center's auth_request endpoint (pm/dev/edge_auth.py).
"""

from __future__ import annotations

import asyncio

from pm.config.settings import Settings
from pm.config.topology import load_topology

PROCESS_TYPES = (
    "gateway", "validation", "fees", "limits", "dispatch", "settlement", "history", "poller",
    "ipps-connector", "qp-connector", "outbox", "psp-sim", "edge-auth", "all",
)  # fmt: skip
# Development stand-ins for services outside PM: they use none of PM's servers.
STAND_INS = ("psp-sim", "edge-auth")


async def run_process(name: str, settings: Settings, database_url: str, redis_url: str, ledger_url: str) -> None:
    """Run one Procfile process type (or `all` of them) until cancelled."""
    from consumers.bootstrap import run_outbox_process
    from consumers.main import run_stages
    from gateway.app import run_gateway
    from pm.config.metrics import serve_metrics

    topology = load_topology(settings.streams_file)
    if name not in (*PROCESS_TYPES, *topology.stages):
        raise ValueError(f"unknown process type {name!r}; one of: {', '.join(PROCESS_TYPES)}")
    urls = {"database_url": database_url, "redis_url": redis_url, "ledger_url": ledger_url}
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
    stage_names = list(topology.stages) if name == "all" else [] if name == "poller" else [name]
    stages = run_stages(**urls, stage_names=stage_names, with_poller=name in ("poller", "all"), topology=topology,
                        settings=settings)  # fmt: skip
    if name == "all":
        await asyncio.gather(
            run_gateway(settings, **urls), stages, run_outbox_process(settings, database_url, redis_url, topology)
        )
    else:
        await stages
