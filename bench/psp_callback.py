"""PSP callback latency: signed `POST /psp/IPPS_TRANSFER/callback` answered by a real gateway process.

    python bench/psp_callback.py                      # 2,000 callbacks at concurrency 16
    python bench/psp_callback.py --callbacks 5000 --concurrency 32 --json

Embedded PostgreSQL and Valkey (or PM_DATABASE_URL / PM_REDIS_URL's servers), a fresh migrated
database, and one gateway process (`pm run gateway`, as the Procfile starts it). N intents are put in
AUTHORIZED on the IPPS channel directly in PostgreSQL (the pipeline is not running: this measures the
route alone). Then N callbacks, each a new event signed as the PSP signs (`X-PSP-Signature`), one in
ten followed by a resend of the same event (a duplicate), at concurrency C, from a keep-alive aiohttp
client on the same machine. Timed per request: send to full answer.

Verified: every callback answered 200, one answer per resent event said `"duplicate": true`, one pm.psp_event
row per event, and exactly one entry per intent on the settlement stream (duplicates hand over nothing).

Target (issue 5): answer fast, under 100 ms; the figure to hold it against is p99.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg
import orjson
import uvloop
from pipeline import BenchError, free_port, servers, wait_ready, write_streams_file  # bench/, beside this file

from pm.dev.embedded import create_database
from pm.dev.fleet import Fleet
from pm.domain import psp_signing
from pm.domain.intent import OperationType, State, Transition
from pm.redis.wire import redis_from_url
from pm.store import intents as store
from pm.store.migrate import migrate

CHANNEL = "IPPS_TRANSFER"
CALLBACK_SECRET = "bench-ipps-callback-secret"
DUPLICATE_EVERY = 10
TARGET_P99_MS = 100.0
CREATE_BATCH = 500


async def authorized_intents(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    """`count` IPPS withdrawals in AUTHORIZED, as dispatch leaves them, in batches of CREATE_BATCH."""
    ids: list[uuid.UUID] = []
    path = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED]
    for start in range(0, count, CREATE_BATCH):
        requests = [
            store.NewIntent(
                api_key_id="bench", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
                operation_type=OperationType.IPPS_WITHDRAWAL, amount_minor=50_000, currency="THB",
                sender_id=1_000_000 + n, recipient_id=None, operator_id=None, destination_ref=f"tok_{n}",
            )
            for n in range(start, min(start + CREATE_BATCH, count))
        ]  # fmt: skip
        batch = [outcome.created.id for outcome in await store.create_intents(pool, requests) if outcome.created]
        for expected, new in itertools.pairwise(path):
            channel = CHANNEL if new == State.VALIDATED else None
            await store.apply_transitions(pool, [Transition(i, expected, new, channel=channel) for i in batch])
        ids += batch
    return ids


async def post_callbacks(url: str, intent_ids: list[uuid.UUID], concurrency: int) -> tuple[list[float], int, int]:
    """(latencies in ms of every request, duplicates answered as such, failures)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for n, intent_id in enumerate(intent_ids):
        body = orjson.dumps({"event_id": f"evt_{uuid.uuid4().hex}", "reference": str(intent_id), "status": "SUCCEEDED"})
        queue.put_nowait(body)
        if n % DUPLICATE_EVERY == 0:
            queue.put_nowait(body)
    latencies_ms: list[float] = []
    duplicates = failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal duplicates, failures
        while not queue.empty():
            body = queue.get_nowait()
            headers = {"Content-Type": "application/json",
                       "X-PSP-Signature": psp_signing.sign(CALLBACK_SECRET, body, int(time.time()))}  # fmt: skip
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
            latencies_ms.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                failures += 1
            elif orjson.loads(answer).get("duplicate"):
                duplicates += 1  # the resend or, when both raced, the original: either way one of the two

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies_ms, duplicates, failures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace, server_url: str, redis_url: str, work_dir: Path) -> dict[str, Any]:
    database_url = await create_database(server_url, f"bench_cb_{uuid.uuid4().hex[:12]}", exist_ok=False)
    await migrate(database_url)
    streams_file, topology = write_streams_file(work_dir, None, {})
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    redis = redis_from_url(redis_url)
    http_port = free_port()
    fleet = Fleet(
        environment={
            "PM_DATABASE_URL": database_url, "PM_REDIS_URL": redis_url, "PM_LEDGER_URL": database_url,
            "PM_STREAMS_FILE": str(streams_file), "PM_HTTP_PORT": str(http_port), "PM_LOG_LEVEL": "WARNING",
            "PM_PSP_IPPS_CALLBACK_SECRET": CALLBACK_SECRET,
        },
        log_dir=work_dir,
    )  # fmt: skip
    try:
        intent_ids = await authorized_intents(pool, args.callbacks)
        fleet.start("gateway", 1)
        base_url = f"http://127.0.0.1:{http_port}"
        await wait_ready(base_url, [], fleet)
        url = f"{base_url}/psp/{CHANNEL}/callback"
        await post_callbacks(url, await authorized_intents(pool, 200), args.concurrency)  # warm-up
        started = time.perf_counter()
        latencies_ms, duplicates, failures = await post_callbacks(url, intent_ids, args.concurrency)
        elapsed_s = time.perf_counter() - started
        events = await pool.fetchval("SELECT count(*) FROM pm.psp_event WHERE intent_id = ANY($1::uuid[])", intent_ids)
        settlement_stream = topology.stage_for_state(State.AUTHORIZED).stream
        handed_over = await redis.xlen(settlement_stream)
    finally:
        fleet.stop()
        await redis.aclose()
        await pool.close()
    expected_duplicates = len(range(0, args.callbacks, DUPLICATE_EVERY))
    if failures or duplicates != expected_duplicates or events != args.callbacks:
        raise BenchError(f"failures {failures}, duplicates {duplicates}/{expected_duplicates}, events {events}")
    if handed_over != args.callbacks + 200:
        raise BenchError(f"{handed_over} settlement entries for {args.callbacks + 200} intents")
    return {
        "callbacks": len(latencies_ms),
        "concurrency": args.concurrency,
        "per_s": round(len(latencies_ms) / elapsed_s),
        "p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "p95_ms": round(percentile(latencies_ms, 0.95), 2),
        "p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "max_ms": round(max(latencies_ms), 2),
        "mean_ms": round(statistics.fmean(latencies_ms), 2),
        "target_p99_ms": TARGET_P99_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=2000, help="distinct callback events (N)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (C)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.callbacks < 1 or args.concurrency < 1:
        parser.error("--callbacks and --concurrency must be positive")
    work_dir = Path(tempfile.mkdtemp(prefix="pm-bench-callback-"))
    try:
        with servers(work_dir / "data") as (server_url, redis_url, _):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                row = runner.run(run(args, server_url, redis_url, work_dir))
    except BenchError as exc:
        print(f"bench/psp_callback.py: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(row))
    else:
        for name, value in row.items():
            print(f"{name:>14}  {value}")
    return 0 if row["p99_ms"] < TARGET_P99_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
