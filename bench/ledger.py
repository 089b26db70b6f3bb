"""Ledger throughput: transfers per second for each backend and batch size.

    python bench/ledger.py                          # memory and postgres (embedded), batch 1/100/8189
    python bench/ledger.py --backends postgres --processes 2
    PM_TIGERBEETLE_ADDRESSES=3000 python bench/ledger.py --backends tigerbeetle

Each run creates 1,000 accounts, then sends single-phase transfers between random pairs, in
batches, one request at a time, and times only the transfers. With `--processes N` (postgres and
tigerbeetle), N processes send their share at once against the same ledger. Every run ends by
checking the ledger's invariants (debits = credits) and that every transfer was created.
Targets on the 2-core machine (issue 2): memory >= 100,000/s and postgres >= 10,000/s at batch 8189.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tigerbeetle as tb

from ledger import open_ledger
from ledger.check import run_check

ACCOUNTS = 1_000
LEDGER_NUMBER = 9_999  # a ledger of its own, away from any PM currency
TRANSFERS_PER_BATCH_SIZE = {1: 2_000, 100: 20_000, 8189: 8189 * 10}


def _transfers(count: int, account_ids: list[int], seed: int) -> list[tb.Transfer]:
    rng = random.Random(seed)
    transfers = []
    for _ in range(count):
        debit, credit = rng.sample(account_ids, 2)
        transfers.append(
            tb.Transfer(
                id=tb.id(),
                debit_account_id=debit,
                credit_account_id=credit,
                amount=rng.randint(1, 10_000),
                ledger=LEDGER_NUMBER,
                code=1,
            )
        )
    return transfers


async def _send(url: str, transfers: list[tb.Transfer], batch_size: int) -> float:
    async with open_ledger(url) as ledger:
        return await _send_on(ledger, transfers, batch_size)


async def _send_on(ledger: object, transfers: list[tb.Transfer], batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(transfers), batch_size):
        batch = transfers[start : start + batch_size]
        results = await ledger.create_transfers(batch)
        bad = [r.status.name for r in results if r.status != tb.CreateTransferStatus.CREATED]
        assert not bad, f"benchmark transfers refused: {bad[:5]}"
    return time.perf_counter() - started


async def _setup_and_send(url: str, count: int, batch_size: int) -> float:
    """One process, one ledger object (a memory:// ledger lives only as long as its object)."""
    async with open_ledger(url) as ledger:
        account_ids = await _create_accounts(ledger)
        transfers = _transfers(count, account_ids, seed=batch_size)
        elapsed_s = await _send_on(ledger, transfers, batch_size)
        report = await run_check(ledger)
        assert report.ok, report.problems
        return elapsed_s


def _process_main(url: str, count: int, account_ids: list[int], seed: int, batch_size: int, start_at: float) -> float:
    transfers = _transfers(count, account_ids, seed)
    time.sleep(max(0.0, start_at - time.time()))  # start together
    return asyncio.run(_send(url, transfers, batch_size))


async def _create_accounts(ledger: object) -> list[int]:
    account_ids = [tb.id() for _ in range(ACCOUNTS)]
    results = await ledger.create_accounts([tb.Account(id=i, ledger=LEDGER_NUMBER, code=1) for i in account_ids])
    assert all(r.status == tb.CreateAccountStatus.CREATED for r in results)
    return account_ids


async def _setup(url: str) -> list[int]:
    async with open_ledger(url) as ledger:
        return await _create_accounts(ledger)


async def _verify(url: str) -> None:
    async with open_ledger(url) as ledger:
        report = await run_check(ledger)
        assert report.ok, report.problems


def run_one(url: str, backend: str, batch_size: int, count: int, processes: int) -> dict:
    if processes == 1 or backend == "memory":
        elapsed_s = asyncio.run(_setup_and_send(url, count, batch_size))
    else:
        account_ids = asyncio.run(_setup(url))
        share = count // processes
        start_at = time.time() + 2.0
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            args = [(url, share, account_ids, batch_size * 100 + p, batch_size, start_at) for p in range(processes)]
            started = time.time()
            pool.starmap(_process_main, args)
            elapsed_s = time.time() - max(started, start_at)
        count = share * processes
        asyncio.run(_verify(url))
    return {
        "backend": backend,
        "batch_size": batch_size,
        "processes": processes,
        "transfers": count,
        "seconds": round(elapsed_s, 3),
        "transfers_per_s": round(count / elapsed_s),
    }


def _postgres_url(args: argparse.Namespace, stack: list) -> str:
    if os.environ.get("PM_DATABASE_URL"):
        return os.environ["PM_DATABASE_URL"]
    from pm.dev.embedded import create_database, running_postgres

    data = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    server = running_postgres(data / "postgres")
    server_url = server.__enter__()
    stack.append(server)
    return asyncio.run(create_database(server_url, f"bench_{uuid.uuid4().hex[:12]}", exist_ok=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="memory,postgres", help="comma list: memory,postgres,tigerbeetle")
    parser.add_argument("--batch-sizes", default="1,100,8189")
    parser.add_argument("--processes", type=int, default=2, help="writers at once for the concurrent run")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of transfers")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()

    stack: list = []
    rows = []
    try:
        for backend in args.backends.split(","):
            if backend == "memory":
                url = "memory://"
            elif backend == "postgres":
                url = _postgres_url(args, stack)
            elif backend == "tigerbeetle":
                addresses = os.environ.get("PM_TIGERBEETLE_ADDRESSES")
                if not addresses:
                    print("skip tigerbeetle: PM_TIGERBEETLE_ADDRESSES is not set", file=sys.stderr)
                    continue
                url = f"tigerbeetle://{addresses}?cluster={os.environ.get('PM_TIGERBEETLE_CLUSTER_ID', '0')}"
            else:
                parser.error(f"unknown backend {backend!r}")
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                count = max(batch_size, int(TRANSFERS_PER_BATCH_SIZE.get(batch_size, 10 * batch_size) * args.scale))
                rows.append(run_one(url, backend, batch_size, count, 1))
                _print(rows[-1], args.json)
            if backend != "memory" and args.processes > 1:
                batch_size = max(int(b) for b in args.batch_sizes.split(","))
                count = int(TRANSFERS_PER_BATCH_SIZE.get(batch_size, 10 * batch_size) * args.scale) * args.processes
                rows.append(run_one(url, backend, batch_size, count, args.processes))
                _print(rows[-1], args.json)
    finally:
        for server in reversed(stack):
            server.__exit__(None, None, None)
    return 0


def _print(row: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        print(
            f"{row['backend']:<12} batch {row['batch_size']:>5}  processes {row['processes']}  "
            f"{row['transfers']:>7} transfers in {row['seconds']:>7.3f} s  = {row['transfers_per_s']:>8,}/s",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
