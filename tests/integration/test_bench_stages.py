"""bench/stages.py on real servers: every stage of the chain handles every entry, each intent ends
SETTLED with the ledger's invariants intact (the bench checks both and raises otherwise), and the
figures it reports are per entry and positive."""

from __future__ import annotations

import argparse

from bench.stages import CHAIN, bench


async def test_the_chain_settles_every_intent_and_reports_each_stage(postgres_server_url, redis_url) -> None:
    args = argparse.Namespace(intents=60, batch=25, profile=None, ledger_url=None, floor=False)
    figures = await bench(postgres_server_url, redis_url, args)
    assert [f.stage for f in figures] == list(CHAIN)
    assert all(f.entries == 60 and f.client_us > 0 and f.reference_loop_ms > 0 for f in figures), figures
