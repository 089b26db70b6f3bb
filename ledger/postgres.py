"""`postgresql://`: TigerBeetle's semantics on PostgreSQL, durable and safe for many processes.

Each write request is one database transaction:
1. lock the cluster row (requests from all processes apply one at a time, in timestamp order);
2. expire pending transfers that are due (TigerBeetle's `pulse`);
3. load just the rows the batch touches — its transfers, orphaned ids and accounts — into a `State`
   (no row locks: every writer holds the cluster row, so no other write can interleave);
4. run the same state machine as the memory backend (`ledger/engine.py`);
5. write back what changed, in a handful of set-based statements, and commit.
A failure anywhere rolls the whole request back: nothing is ever half-applied.

When the database cannot be reached or drops the connection mid-request, every public method raises
`LedgerUnavailableError` (the connection error is its `__cause__`): the request was not applied, or (a
commit whose answer was lost) applied in full, so retrying it with the same ids is safe either way.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import importlib.resources
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import asyncpg
import tigerbeetle as tb
from asyncpg.pgproto import pgproto

from ledger import engine, filters, validate
from ledger.clock import next_batch_timestamp
from ledger.errors import LedgerUnavailableError
from ledger.state import PendingStatus, State

POOL_SIZE_MAX = 8
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
TIMESTAMP_SQL_MAX = (1 << 63) - 1  # bigint; TigerBeetle timestamps never reach it

ACCOUNT_COLUMNS = (
    "id, debits_pending, debits_posted, credits_pending, credits_posted, "
    "user_data_128, user_data_64, user_data_32, ledger, code, flags, timestamp"
)
TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, pending_id, "
    "user_data_128, user_data_64, user_data_32, timeout, ledger, code, flags, timestamp"
)
BALANCE_COLUMNS = (
    "dr_debits_pending",
    "dr_debits_posted",
    "dr_credits_pending",
    "dr_credits_posted",
    "cr_debits_pending",
    "cr_debits_posted",
    "cr_credits_pending",
    "cr_credits_posted",
)
TRANSFER_INSERT_COLUMNS = (*TRANSFER_COLUMNS.split(", "), "pending_status", "expires_at", *BALANCE_COLUMNS)


# The database is down or dropped us (see pm/store/pool.py for the same list on PM's side; the ledger
# imports nothing of PM): connection errors (08xxx), server shutdown or a terminated backend (57P01-57P03),
# too many connections, a refused or timed-out connect.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # A server that takes no writes (25006): a hot standby after a failover, or one put in read-only
    # mode (default_transaction_read_only) for maintenance. New connections refuse such a server
    # (target_session_attrs read-write): TargetServerAttributeNotMatched when no host is writable.
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)


def _target_session_attrs(dsn: str) -> str | None:
    if "target_session_attrs=" in dsn or os.environ.get("PGTARGETSESSIONATTRS"):
        return None
    return "read-write"


P = ParamSpec("P")
R = TypeVar("R")


CLEANUP_CHAIN_LINKS_MAX = 8  # as pm/store/pool.py's

# Cluster time's wall clock is the database's, as TigerBeetle's is its replicas': every process that
# writes reads the same clock. With each caller's own, one host whose clock ran ahead would carry cluster
# time forward for everyone and expire every hold in flight at once (cluster time never steps back).
_DATABASE_NOW_NS = "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"


def _unavailable(exc: BaseException) -> bool:
    """As pm/store/pool.py's database_unavailable: asyncpg's state errors raised while it cleaned up after
    an earlier error (the ROLLBACKs of the transaction and of the pool's release) stand for that error."""
    link: BaseException | None = exc
    for _ in range(CLEANUP_CHAIN_LINKS_MAX):
        if link is None:
            return False
        if isinstance(link, _UNAVAILABLE_ERRORS) or _dying_connection(link):
            return True
        if type(link) not in (asyncpg.InterfaceError, asyncpg.InternalClientError):
            return False
        link = link.__cause__ or link.__context__
    return False


def _dying_connection(exc: BaseException) -> bool:
    # A connection that died under the statement (as pm/store/pool.py explains): the protocol still
    # consuming the server's FATAL message, or the connection closed or taken back by the pool meanwhile.
    message = str(exc)
    if type(exc) is asyncpg.InterfaceError:
        return "connection is closed" in message or "released back to the pool" in message
    return type(exc) is asyncpg.InternalClientError and "another operation" in message


def _translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The ledger's own error for an unreachable database, raised from the connection error."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if _unavailable(exc):
                raise LedgerUnavailableError(f"the ledger database is unavailable: {exc!r}") from exc
            raise

    return call


async def keep_session(connection: asyncpg.Connection) -> None:
    """asyncpg pool `reset` hook that sends nothing: every pool of the PM passes it.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: one more round trip and one more PostgreSQL transaction per pooled statement (it was
    half the commits of a P2P intent). No pooled connection here keeps session state (no SET, LISTEN,
    cursors outside a transaction or session advisory locks), and asyncpg still rolls back a
    transaction left open before it calls this hook.
    """


POOL_CLOSE_TIMEOUT_S = 10.0


async def close_pool(pool: asyncpg.Pool, timeout_s: float = POOL_CLOSE_TIMEOUT_S) -> None:
    """Close gracefully, but bounded: asyncpg's close waits without limit for every connection to be
    released, so one stuck holder would hang shutdown; after `timeout_s` the rest are terminated."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        pool.terminate()


def _uuid(value: int) -> uuid.UUID:
    # asyncpg's own UUID type (a uuid.UUID, built in C): a fifth of uuid.UUID(int=...)'s CPU, and every
    # transfer written carries five ids.
    return pgproto.UUID(value.to_bytes(16, "big"))


def _account(row: asyncpg.Record) -> tb.Account:
    return tb.Account(
        id=row[0].int,
        debits_pending=int(row[1]),
        debits_posted=int(row[2]),
        credits_pending=int(row[3]),
        credits_posted=int(row[4]),
        user_data_128=row[5].int,
        user_data_64=int(row[6]),
        user_data_32=row[7],
        ledger=row[8],
        code=row[9],
        flags=tb.AccountFlags(row[10]),
        timestamp=row[11],
    )


def _transfer(row: asyncpg.Record) -> tb.Transfer:
    return tb.Transfer(
        id=row[0].int,
        debit_account_id=row[1].int,
        credit_account_id=row[2].int,
        amount=int(row[3]),
        pending_id=row[4].int,
        user_data_128=row[5].int,
        user_data_64=int(row[6]),
        user_data_32=row[7],
        timeout=row[8],
        ledger=row[9],
        code=row[10],
        flags=tb.TransferFlags(row[11]),
        timestamp=row[12],
    )


class PostgresLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str) -> PostgresLedger:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                # Only a server that takes writes, unless the URL or the environment says (as PM's pools).
                target_session_attrs=_target_session_attrs(dsn),
                min_size=1,
                max_size=POOL_SIZE_MAX,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                reset=keep_session,
            )
        except (
            OSError,
            asyncpg.PostgresError,
            TimeoutError,
            ValueError,
            asyncpg.exceptions.TargetServerAttributeNotMatched,
        ) as exc:
            raise LedgerUnavailableError(f"cannot connect to the ledger database: {exc}") from exc
        ledger = cls(pool)
        await ledger._create_schema()
        return ledger

    async def _create_schema(self) -> None:
        ddl = importlib.resources.files("ledger").joinpath("postgres_schema.sql").read_text()
        async with self._pool.acquire() as conn, conn.transaction():
            # Two processes creating the schema at once would race on CREATE IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tb_ledger.schema'))")
            await conn.execute(ddl)

    async def close(self) -> None:
        await close_pool(self._pool)

    # -- writes ------------------------------------------------------------------------------

    @_translated
    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        validate.check_accounts(accounts)
        async with self._pool.acquire() as conn, conn.transaction():
            state = State()
            last_timestamp, now_ns = await self._pulse(conn, state)
            await _load_accounts(conn, state, [a.id for a in accounts])
            if accounts and accounts[0].flags & tb.AccountFlags.IMPORTED:
                await _load_imported_context(conn, state, [a.timestamp for a in accounts])
            batch_timestamp = next_batch_timestamp(last_timestamp, len(accounts), now_ns)
            results = engine.create_accounts(state, accounts, batch_timestamp)
            await _write_back(conn, state, batch_timestamp)
        return results

    @_translated
    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        validate.check_transfers(transfers)
        async with self._pool.acquire() as conn, conn.transaction():
            state = State()
            last_timestamp, now_ns = await self._pulse(conn, state)
            transfer_ids = {t.id for t in transfers} | {t.pending_id for t in transfers if t.pending_id}
            await _load_transfers(conn, state, transfer_ids)
            await _load_orphans(conn, state, [t.id for t in transfers])
            account_ids = {t.debit_account_id for t in transfers} | {t.credit_account_id for t in transfers}
            account_ids |= {p.debit_account_id for p in state.transfers.values()}
            account_ids |= {p.credit_account_id for p in state.transfers.values()}
            await _load_accounts(conn, state, account_ids)
            if transfers and transfers[0].flags & tb.TransferFlags.IMPORTED:
                await _load_imported_context(conn, state, [t.timestamp for t in transfers])
            batch_timestamp = next_batch_timestamp(last_timestamp, len(transfers), now_ns)
            results = engine.create_transfers(state, transfers, batch_timestamp)
            await _write_back(conn, state, batch_timestamp)
        return results

    async def _pulse(self, conn: asyncpg.Connection, state: State) -> tuple[int, int]:
        """Lock cluster time, expire due pending transfers; return the last timestamp used and the
        database's clock (the cluster's wall clock: see _DATABASE_NOW_NS)."""
        row = await conn.fetchrow(
            f"SELECT last_timestamp, {_DATABASE_NOW_NS} AS now_ns FROM tb_ledger.cluster WHERE singleton FOR UPDATE"
        )
        last_timestamp: int = row["last_timestamp"]
        now_ns: int = row["now_ns"]
        now = next_batch_timestamp(last_timestamp, 1, now_ns)
        for _ in range(1_000):  # bounded: each round expires up to one full batch
            rows = await conn.fetch(
                f"SELECT {TRANSFER_COLUMNS}, expires_at FROM tb_ledger.transfers"
                " WHERE pending_status = 1 AND expires_at <= $1 ORDER BY expires_at, timestamp LIMIT $2",
                min(now, TIMESTAMP_SQL_MAX),
                validate.BATCH_EVENTS_MAX,
            )
            if not rows:
                break
            expiring = State()
            for row in rows:
                p = _transfer(row)
                expiring.transfers[p.id] = p
                expiring.pending_status[p.id] = PendingStatus.PENDING
                heapq.heappush(expiring.expiry_heap, (row["expires_at"], p.timestamp, p.id))
            ids = {p.debit_account_id for p in expiring.transfers.values()}
            ids |= {p.credit_account_id for p in expiring.transfers.values()}
            await _load_accounts(conn, expiring, ids)
            due = engine.due_expiries(expiring, now, validate.BATCH_EVENTS_MAX)
            assert len(due) == len(rows)
            last_timestamp = next_batch_timestamp(last_timestamp, len(due), now_ns)
            engine.expire_pending_transfers(expiring, due, last_timestamp)
            await _write_back(conn, expiring, last_timestamp)
            now = next_batch_timestamp(last_timestamp, 1, now_ns)
        return last_timestamp, now_ns

    async def _pulse_if_due(self) -> None:
        async with self._pool.acquire() as conn:
            due = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tb_ledger.transfers"
                f" WHERE pending_status = 1 AND expires_at <= least({_DATABASE_NOW_NS}, $1))",
                TIMESTAMP_SQL_MAX,
            )
            if due:
                async with conn.transaction():
                    last_timestamp, _ = await self._pulse(conn, State())
                    await conn.execute(
                        "UPDATE tb_ledger.cluster SET last_timestamp = $1 WHERE singleton", last_timestamp
                    )

    # -- reads -------------------------------------------------------------------------------

    @_translated
    async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
        validate.check_ids(ids)
        await self._pulse_if_due()
        rows = await self._pool.fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM tb_ledger.accounts WHERE id = ANY($1::uuid[])",
            [_uuid(i) for i in set(ids)],
        )
        by_id = {row[0].int: row for row in rows}
        return [_account(by_id[i]) for i in ids if i in by_id]

    @_translated
    async def lookup_transfers(self, ids: list[int]) -> list[tb.Transfer]:
        validate.check_ids(ids)
        await self._pulse_if_due()
        rows = await self._pool.fetch(
            f"SELECT {TRANSFER_COLUMNS} FROM tb_ledger.transfers WHERE id = ANY($1::uuid[])",
            [_uuid(i) for i in set(ids)],
        )
        by_id = {row[0].int: row for row in rows}
        return [_transfer(by_id[i]) for i in ids if i in by_id]

    @_translated
    async def get_account_transfers(self, f: tb.AccountFilter) -> list[tb.Transfer]:
        validate.check_account_filter(f)
        await self._pulse_if_due()
        if not filters.account_filter_valid(f):
            return []
        rows = await self._account_filter_query(f, TRANSFER_COLUMNS)
        return [_transfer(row) for row in rows]

    @_translated
    async def get_account_balances(self, f: tb.AccountFilter) -> list[tb.AccountBalance]:
        validate.check_account_filter(f)
        await self._pulse_if_due()
        flags = await self._pool.fetchval("SELECT flags FROM tb_ledger.accounts WHERE id = $1", _uuid(f.account_id))
        if flags is None or not flags & tb.AccountFlags.HISTORY or not filters.account_filter_valid(f):
            return []
        rows = await self._account_filter_query(f, "debit_account_id, timestamp, " + ", ".join(BALANCE_COLUMNS))
        balances = []
        for row in rows:
            offset = 2 if row[0].int == f.account_id else 6
            assert row[offset] is not None, "an account with history has a balance at each of its transfers"
            balances.append(
                tb.AccountBalance(
                    debits_pending=int(row[offset]),
                    debits_posted=int(row[offset + 1]),
                    credits_pending=int(row[offset + 2]),
                    credits_posted=int(row[offset + 3]),
                    timestamp=row[1],
                )
            )
        return balances

    async def _account_filter_query(self, f: tb.AccountFilter, columns: str) -> list[asyncpg.Record]:
        low, high = filters.timestamp_range(f.timestamp_min, f.timestamp_max)
        if low > TIMESTAMP_SQL_MAX:
            return []  # a valid filter on a range no timestamp reaches; bigint could not take the bound
        sides = []
        if f.flags & tb.AccountFilterFlags.DEBITS:
            sides.append("debit_account_id = $1")
        if f.flags & tb.AccountFilterFlags.CREDITS:
            sides.append("credit_account_id = $1")
        where = [f"({' OR '.join(sides)})", "timestamp BETWEEN $2 AND $3"]
        args: list[Any] = [_uuid(f.account_id), low, min(high, TIMESTAMP_SQL_MAX)]
        _add_equals(where, args, f, ("user_data_128", "user_data_64", "user_data_32", "code"))
        order = "DESC" if f.flags & tb.AccountFilterFlags.REVERSED else "ASC"
        args.append(filters.result_limit(f.limit))
        sql = (
            f"SELECT {columns} FROM tb_ledger.transfers WHERE {' AND '.join(where)}"
            f" ORDER BY timestamp {order} LIMIT ${len(args)}"
        )
        return await self._pool.fetch(sql, *args)

    @_translated
    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        validate.check_query_filter(f)
        await self._pulse_if_due()
        if not filters.query_filter_valid(f):
            return []
        return [_account(row) for row in await self._query(f, "accounts", ACCOUNT_COLUMNS)]

    @_translated
    async def query_transfers(self, f: tb.QueryFilter) -> list[tb.Transfer]:
        validate.check_query_filter(f)
        await self._pulse_if_due()
        if not filters.query_filter_valid(f):
            return []
        return [_transfer(row) for row in await self._query(f, "transfers", TRANSFER_COLUMNS)]

    async def _query(self, f: tb.QueryFilter, table: str, columns: str) -> list[asyncpg.Record]:
        low, high = filters.timestamp_range(f.timestamp_min, f.timestamp_max)
        if low > TIMESTAMP_SQL_MAX:
            return []  # a valid filter on a range no timestamp reaches; bigint could not take the bound
        where = ["timestamp BETWEEN $1 AND $2"]
        args: list[Any] = [low, min(high, TIMESTAMP_SQL_MAX)]
        _add_equals(where, args, f, ("user_data_128", "user_data_64", "user_data_32", "ledger", "code"))
        order = "DESC" if f.flags & tb.QueryFilterFlags.REVERSED else "ASC"
        args.append(filters.result_limit(f.limit))
        sql = (
            f"SELECT {columns} FROM tb_ledger.{table} WHERE {' AND '.join(where)}"
            f" ORDER BY timestamp {order} LIMIT ${len(args)}"
        )
        return await self._pool.fetch(sql, *args)


def _add_equals(where: list[str], args: list[Any], f: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(f, name)
        if value:
            args.append(_uuid(value) if name == "user_data_128" else value)
            where.append(f"{name} = ${len(args)}")


# -- loading a State -----------------------------------------------------------------------------


async def _load_accounts(conn: asyncpg.Connection, state: State, ids: set[int] | list[int]) -> None:
    wanted = sorted({i for i in ids if i not in state.accounts and 0 < i < filters.U128_MAX})
    if not wanted:
        return
    # No FOR UPDATE: the cluster row lock (held by every writer) already orders all writes, and a
    # row lock costs a WAL record and a dirtied page per account.
    assert conn.is_in_transaction(), "accounts are read inside the writer's transaction"
    rows = await conn.fetch(
        f"SELECT {ACCOUNT_COLUMNS} FROM tb_ledger.accounts WHERE id = ANY($1::uuid[])", [_uuid(i) for i in wanted]
    )
    for row in rows:
        account = _account(row)
        state.accounts[account.id] = account
    state.touched_account_ids.clear()


async def _load_transfers(conn: asyncpg.Connection, state: State, ids: set[int]) -> None:
    wanted = [_uuid(i) for i in ids if 0 < i < filters.U128_MAX]
    if not wanted:
        return
    rows = await conn.fetch(
        f"SELECT {TRANSFER_COLUMNS}, pending_status FROM tb_ledger.transfers WHERE id = ANY($1::uuid[])",
        wanted,
    )
    for row in rows:
        transfer = _transfer(row)
        state.transfers[transfer.id] = transfer
        if row["pending_status"] is not None:
            state.pending_status[transfer.id] = PendingStatus(row["pending_status"])


async def _load_orphans(conn: asyncpg.Connection, state: State, ids: list[int]) -> None:
    wanted = [_uuid(i) for i in set(ids) if 0 < i < filters.U128_MAX]
    if wanted:
        rows = await conn.fetch("SELECT id FROM tb_ledger.orphan_transfer_ids WHERE id = ANY($1::uuid[])", wanted)
        state.orphan_ids.update(row[0].int for row in rows)


async def _load_imported_context(conn: asyncpg.Connection, state: State, timestamps: list[int]) -> None:
    """What the imported-timestamp checks read: greatest timestamps, and which are taken."""
    state.account_timestamp_max = await conn.fetchval("SELECT coalesce(max(timestamp), 0) FROM tb_ledger.accounts")
    state.transfer_timestamp_max = await conn.fetchval("SELECT coalesce(max(timestamp), 0) FROM tb_ledger.transfers")
    candidates = [ts for ts in set(timestamps) if 0 < ts <= TIMESTAMP_SQL_MAX]
    if candidates:
        for table, taken in (
            ("accounts", state.account_timestamps),
            ("transfers", state.transfer_timestamps),
        ):
            rows = await conn.fetch(
                f"SELECT timestamp FROM tb_ledger.{table} WHERE timestamp = ANY($1::bigint[])", candidates
            )
            taken.update(row[0] for row in rows)


# -- writing a State back -----------------------------------------------------------------------


async def _write_back(conn: asyncpg.Connection, state: State, last_timestamp: int) -> None:
    """Persist what the state machine changed, with one statement per kind of change."""
    # Ids of rolled-back inserts stay in the change lists; they are no longer in the maps.
    new_account_ids = {i for i in state.new_account_ids if i in state.accounts}
    new_accounts = [state.accounts[i] for i in new_account_ids]
    updated_accounts = [
        state.accounts[i] for i in state.touched_account_ids if i in state.accounts and i not in new_account_ids
    ]
    new_transfers = [state.transfers[i] for i in dict.fromkeys(state.new_transfer_ids) if i in state.transfers]
    new_transfer_ids = {t.id for t in new_transfers}
    await _insert_accounts(conn, new_accounts)
    await _update_accounts(conn, updated_accounts)
    await _insert_transfers(conn, state, new_transfers)
    pending_updates = [
        (_uuid(i), int(state.pending_status[i]))
        for i in state.touched_pending_ids
        if i in state.pending_status and i not in new_transfer_ids
    ]
    if pending_updates:
        await conn.execute(
            "UPDATE tb_ledger.transfers t SET pending_status = u.status"
            " FROM unnest($1::uuid[], $2::smallint[]) AS u(id, status) WHERE t.id = u.id",
            [u[0] for u in pending_updates],
            [u[1] for u in pending_updates],
        )
    if state.new_orphan_ids:
        await conn.execute(
            "INSERT INTO tb_ledger.orphan_transfer_ids (id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
            [_uuid(i) for i in state.new_orphan_ids],
        )
    await conn.execute("UPDATE tb_ledger.cluster SET last_timestamp = $1 WHERE singleton", last_timestamp)
    state.clear_changes()


async def _insert_accounts(conn: asyncpg.Connection, accounts: list[tb.Account]) -> None:
    if accounts:
        await conn.copy_records_to_table(
            "accounts",
            schema_name="tb_ledger",
            columns=ACCOUNT_COLUMNS.split(", "),
            records=[
                (
                    _uuid(a.id),
                    a.debits_pending,
                    a.debits_posted,
                    a.credits_pending,
                    a.credits_posted,
                    _uuid(a.user_data_128),
                    a.user_data_64,
                    a.user_data_32,
                    a.ledger,
                    a.code,
                    int(a.flags),
                    a.timestamp,
                )
                for a in accounts
            ],
        )


async def _update_accounts(conn: asyncpg.Connection, accounts: list[tb.Account]) -> None:
    if accounts:
        await conn.execute(
            "UPDATE tb_ledger.accounts a SET debits_pending = u.dp, debits_posted = u.dpo,"
            " credits_pending = u.cp, credits_posted = u.cpo, flags = u.flags"
            " FROM unnest($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[],"
            " $6::integer[]) AS u(id, dp, dpo, cp, cpo, flags) WHERE a.id = u.id",
            [_uuid(a.id) for a in accounts],
            [a.debits_pending for a in accounts],
            [a.debits_posted for a in accounts],
            [a.credits_pending for a in accounts],
            [a.credits_posted for a in accounts],
            [int(a.flags) for a in accounts],
        )


async def _insert_transfers(conn: asyncpg.Connection, state: State, transfers: list[tb.Transfer]) -> None:
    if not transfers:
        return
    records = []
    for t in transfers:
        pending = bool(t.flags & tb.TransferFlags.PENDING)
        event = state.balance_events.get(t.timestamp)
        dr = event.debit_balance if event else None
        cr = event.credit_balance if event else None
        records.append(
            (
                _uuid(t.id),
                _uuid(t.debit_account_id),
                _uuid(t.credit_account_id),
                t.amount,
                _uuid(t.pending_id),
                _uuid(t.user_data_128),
                t.user_data_64,
                t.user_data_32,
                t.timeout,
                t.ledger,
                t.code,
                int(t.flags),
                t.timestamp,
                int(state.pending_status[t.id]) if pending else None,
                t.timestamp + t.timeout * engine.NS_PER_S if pending and t.timeout else None,
                *((dr.debits_pending, dr.debits_posted, dr.credits_pending, dr.credits_posted) if dr else (None,) * 4),
                *((cr.debits_pending, cr.debits_posted, cr.credits_pending, cr.credits_posted) if cr else (None,) * 4),
            )
        )
    await conn.copy_records_to_table(
        "transfers", schema_name="tb_ledger", columns=list(TRANSFER_INSERT_COLUMNS), records=records
    )
