"""bench/stages.py on real servers: every stage of the chain handles every entry, each intent ends
SETTLED with the ledger's invariants intact (the bench checks both and raises otherwise), and the
figures it reports are per entry and positive; with the real handlers and with the floor's."""

from __future__ import annotations

import argparse

import pytest

from bench.stages import CHAIN, bench


@pytest.mark.parametrize("floor", [False, True])
async def test_the_chain_settles_every_intent_and_reports_each_stage(postgres_server_url, redis_url, floor) -> None:
    args = argparse.Namespace(intents=60, batch=25, profile=None, ledger_url=None, floor=floor)
    figures = await bench(postgres_server_url, redis_url, args)
    assert [f.stage for f in figures] == list(CHAIN)
    assert all(f.entries == 60 and f.client_us > 0 and f.reference_loop_ms > 0 for f in figures), figures
