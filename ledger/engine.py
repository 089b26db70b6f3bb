"""TigerBeetle's state machine, in Python, over a `State` (no I/O).

This follows TigerBeetle 0.17's `src/state_machine.zig` check by check, in the same order, so every
event gets the status a TigerBeetle cluster would give it: batch-level checks (linked chains,
imported events, timestamps), then `create_account` / `create_transfer` /
`post_or_void_pending_transfer`, the idempotency checks (`exists`, `exists_with_different_*`,
`id_already_failed` after a transient failure), balancing and closing transfers, and the expiry of
pending transfers (TigerBeetle's `pulse`).

Each kind of event (new account, new transfer, post/void) has a refusal function, which reads the
`State` and writes nothing, returning the first status TigerBeetle would fail the event with, or None;
and an apply step, which writes an event its refusal accepted. Id checks and idempotency come first,
in the dispatcher, because `exists*` answers with the existing object's timestamp.
"""

from __future__ import annotations

import heapq

import tigerbeetle as tb

from ledger.state import Balance, BalanceEvent, PendingStatus, State

A = tb.CreateAccountStatus
T = tb.CreateTransferStatus


class AF:
    """Account flag bits as plain ints: IntFlag arithmetic costs microseconds in a hot loop."""

    LINKED = int(tb.AccountFlags.LINKED)
    DEBITS_MUST_NOT_EXCEED_CREDITS = int(tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    CREDITS_MUST_NOT_EXCEED_DEBITS = int(tb.AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
    HISTORY = int(tb.AccountFlags.HISTORY)
    IMPORTED = int(tb.AccountFlags.IMPORTED)
    CLOSED = int(tb.AccountFlags.CLOSED)


class TF:
    """Transfer flag bits as plain ints."""

    LINKED = int(tb.TransferFlags.LINKED)
    PENDING = int(tb.TransferFlags.PENDING)
    POST_PENDING_TRANSFER = int(tb.TransferFlags.POST_PENDING_TRANSFER)
    VOID_PENDING_TRANSFER = int(tb.TransferFlags.VOID_PENDING_TRANSFER)
    BALANCING_DEBIT = int(tb.TransferFlags.BALANCING_DEBIT)
    BALANCING_CREDIT = int(tb.TransferFlags.BALANCING_CREDIT)
    CLOSING_DEBIT = int(tb.TransferFlags.CLOSING_DEBIT)
    CLOSING_CREDIT = int(tb.TransferFlags.CLOSING_CREDIT)
    IMPORTED = int(tb.TransferFlags.IMPORTED)


U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1
TIMESTAMP_MIN = 1
TIMESTAMP_MAX = (1 << 63) - 1  # the top bit of a TigerBeetle timestamp is its tombstone flag
NS_PER_S = 1_000_000_000

ACCOUNT_FLAGS_KNOWN = (
    AF.LINKED
    | AF.DEBITS_MUST_NOT_EXCEED_CREDITS
    | AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    | AF.HISTORY
    | AF.IMPORTED
    | AF.CLOSED
)
TRANSFER_FLAGS_KNOWN = (
    TF.LINKED
    | TF.PENDING
    | TF.POST_PENDING_TRANSFER
    | TF.VOID_PENDING_TRANSFER
    | TF.BALANCING_DEBIT
    | TF.BALANCING_CREDIT
    | TF.CLOSING_DEBIT
    | TF.CLOSING_CREDIT
    | TF.IMPORTED
)

BALANCING_FLAGS = TF.BALANCING_DEBIT | TF.BALANCING_CREDIT

# Failures that depend on the ledger's state at that moment. TigerBeetle remembers the id of a
# transfer that failed with one of these, and answers `id_already_failed` to every retry of it,
# so a retry can never succeed later under the same id (docs: create_transfers, id_already_failed).
TRANSIENT_TRANSFER_STATUSES = frozenset(
    {
        T.DEBIT_ACCOUNT_NOT_FOUND,
        T.CREDIT_ACCOUNT_NOT_FOUND,
        T.PENDING_TRANSFER_NOT_FOUND,
        T.EXCEEDS_CREDITS,
        T.EXCEEDS_DEBITS,
        T.DEBIT_ACCOUNT_ALREADY_CLOSED,
        T.CREDIT_ACCOUNT_ALREADY_CLOSED,
    }
)


def event_timestamps(batch_timestamp: int, count: int) -> list[int]:
    """TigerBeetle's per-event timestamps: the batch's timestamp is the last event's."""
    return [batch_timestamp - count + index + 1 for index in range(count)]


# -- batch ---------------------------------------------------------------------------------------


def create_accounts(
    state: State, accounts: list[tb.Account], batch_timestamp: int
) -> list[tb.CreateAccountResult]:
    statuses, timestamps = _execute_batch(state, accounts, batch_timestamp, _create_account, A)
    return [
        tb.CreateAccountResult(timestamp=ts, status=status)
        for status, ts in zip(statuses, timestamps, strict=False)
    ]


def create_transfers(
    state: State, transfers: list[tb.Transfer], batch_timestamp: int
) -> list[tb.CreateTransferResult]:
    statuses, timestamps = _execute_batch(state, transfers, batch_timestamp, _create_transfer, T)
    return [
        tb.CreateTransferResult(timestamp=ts, status=status)
        for status, ts in zip(statuses, timestamps, strict=False)
    ]


def _execute_batch(state, events, batch_timestamp, create_one, Status):
    """`execute_create` of the state machine: chains, imported checks, timestamps, results."""
    count = len(events)
    assigned = event_timestamps(batch_timestamp, count)
    statuses: list = [None] * count
    timestamps: list[int] = [0] * count
    chain_start: int | None = None
    chain_broken = False
    imported_flag = AF.IMPORTED if Status is A else TF.IMPORTED
    first_imported = count > 0 and bool(int(events[0].flags) & imported_flag)
    # An enum member costs ~100 ns per lookup through its class (Python 3.11): the loop uses locals.
    created, chain_open, chain_failed = Status.CREATED, Status.LINKED_EVENT_CHAIN_OPEN, Status.LINKED_EVENT_FAILED

    for index, event in enumerate(events):
        event_flags = int(event.flags)
        linked = bool(event_flags & 1)  # LINKED is bit 0 for accounts and transfers
        imported = bool(event_flags & imported_flag)
        event_timestamp = event.timestamp if imported else assigned[index]
        result_timestamp = assigned[index]
        status = None
        if linked:
            if chain_start is None:
                chain_start = index
                assert not chain_broken
                state.chain_open()
            if index == count - 1:
                status = chain_open
        if status is None and chain_broken:
            status = chain_failed
        if status is None and (imported or first_imported or event.timestamp != 0):
            status = _check_timestamp(event, imported, first_imported, batch_timestamp, Status)
        if status is None:
            status, existing_timestamp = create_one(state, event, event_flags, event_timestamp)
            if existing_timestamp is not None:
                result_timestamp = existing_timestamp
            elif status == created:
                result_timestamp = event_timestamp

        if status != created:
            if chain_start is not None:
                if not chain_broken:
                    chain_broken = True
                    state.chain_discard()
                    for chained in range(chain_start, index):
                        statuses[chained] = chain_failed
                        timestamps[chained] = assigned[chained]
                else:
                    assert status in (chain_failed, chain_open)
            if Status is T and status in TRANSIENT_TRANSFER_STATUSES:
                state.add_orphan_id(event.id)
        statuses[index] = status
        timestamps[index] = result_timestamp

        if chain_start is not None and (not linked or status == chain_open):
            if not chain_broken:
                state.chain_persist()
            chain_start = None
            chain_broken = False

    assert chain_start is None and not chain_broken
    assert all(status is not None for status in statuses)
    return statuses, timestamps


def _check_timestamp(event, imported: bool, first_imported: bool, batch_timestamp: int, Status):
    # The first event decides whether the whole batch is imported.
    if first_imported != imported:
        return Status.IMPORTED_EVENT_NOT_EXPECTED if imported else Status.IMPORTED_EVENT_EXPECTED
    if imported:
        if event.timestamp < TIMESTAMP_MIN or event.timestamp > TIMESTAMP_MAX:
            return Status.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
        if event.timestamp >= batch_timestamp:
            return Status.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE
    elif event.timestamp != 0:
        return Status.TIMESTAMP_MUST_BE_ZERO
    return None


# -- accounts ------------------------------------------------------------------------------------


def _create_account(
    state: State, a: tb.Account, flags: int, timestamp: int
) -> tuple[tb.CreateAccountStatus, int | None]:
    """One account: its id, then idempotency (`exists*`), then the checks of a new one, then the write.

    `flags` is `int(a.flags)`: converting an IntFlag costs more than a check, so it is done once an event.
    """
    if flags & ~ACCOUNT_FLAGS_KNOWN:
        return A.RESERVED_FLAG, None
    if a.id == 0:
        return A.ID_MUST_NOT_BE_ZERO, None
    if a.id == U128_MAX:
        return A.ID_MUST_NOT_BE_INT_MAX, None

    existing = state.accounts.get(a.id)
    if existing is not None:
        return _create_account_exists(a, existing), existing.timestamp

    status = _account_refusal(state, a, flags, timestamp)
    if status is not None:
        return status, None
    _apply_account(state, a, flags, timestamp)
    return A.CREATED, None


def _account_refusal(state: State, a: tb.Account, flags: int, timestamp: int) -> tb.CreateAccountStatus | None:
    """Why TigerBeetle refuses a new account (valid id, not taken): its first failing check, or None.

    Reads `state`, writes nothing.
    """
    if flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS:
        return A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if a.debits_pending != 0:
        return A.DEBITS_PENDING_MUST_BE_ZERO
    if a.debits_posted != 0:
        return A.DEBITS_POSTED_MUST_BE_ZERO
    if a.credits_pending != 0:
        return A.CREDITS_PENDING_MUST_BE_ZERO
    if a.credits_posted != 0:
        return A.CREDITS_POSTED_MUST_BE_ZERO
    if a.ledger == 0:
        return A.LEDGER_MUST_NOT_BE_ZERO
    if a.code == 0:
        return A.CODE_MUST_NOT_BE_ZERO

    if flags & AF.IMPORTED:
        # After the idempotency checks, so an importer can still see `exists`.
        if state.account_timestamp_max and timestamp <= state.account_timestamp_max:
            return A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
        if timestamp in state.transfer_timestamps:
            return A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    return None


def _apply_account(state: State, a: tb.Account, flags: int, timestamp: int) -> None:
    """Write a new account that `_account_refusal` accepted (balances zero, the event's timestamp)."""
    assert a.id not in state.accounts
    state.insert_account(
        tb.Account(
            id=a.id,
            user_data_128=a.user_data_128,
            user_data_64=a.user_data_64,
            user_data_32=a.user_data_32,
            ledger=a.ledger,
            code=a.code,
            flags=tb.AccountFlags(flags),
            timestamp=timestamp,
        )
    )
    assert state.accounts[a.id].timestamp == timestamp <= state.account_timestamp_max


def _create_account_exists(a: tb.Account, e: tb.Account) -> tb.CreateAccountStatus:
    if int(a.flags) != int(e.flags):
        return A.EXISTS_WITH_DIFFERENT_FLAGS
    if a.user_data_128 != e.user_data_128:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if a.user_data_64 != e.user_data_64:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if a.user_data_32 != e.user_data_32:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if a.ledger != e.ledger:
        return A.EXISTS_WITH_DIFFERENT_LEDGER
    if a.code != e.code:
        return A.EXISTS_WITH_DIFFERENT_CODE
    return A.EXISTS


# -- transfers -----------------------------------------------------------------------------------


def _create_transfer(
    state: State, t: tb.Transfer, flags: int, timestamp: int
) -> tuple[tb.CreateTransferStatus, int | None]:
    """One transfer: its id, then idempotency, then the checks and write of a post/void or a new one.

    `flags` is `int(t.flags)`: converting an IntFlag costs more than a check, so it is done once an event.
    """
    if flags & ~TRANSFER_FLAGS_KNOWN:
        return T.RESERVED_FLAG, None
    if t.id == 0:
        return T.ID_MUST_NOT_BE_ZERO, None
    if t.id == U128_MAX:
        return T.ID_MUST_NOT_BE_INT_MAX, None

    existing = state.transfers.get(t.id)
    if existing is not None:
        return _create_transfer_exists(state, t, existing), existing.timestamp
    if t.id in state.orphan_ids:
        return T.ID_ALREADY_FAILED, None

    if flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
        status = _post_or_void_refusal(state, t, flags, timestamp)
        if status is not None:
            return status, None
        _apply_post_or_void(state, t, flags, timestamp)
        return T.CREATED, None
    status = _transfer_refusal(state, t, flags, timestamp)
    if status is not None:
        return status, None
    _apply_transfer(state, t, flags, timestamp)
    return T.CREATED, None


def _transfer_refusal(state: State, t: tb.Transfer, flags: int, timestamp: int) -> tb.CreateTransferStatus | None:
    """Why TigerBeetle refuses a new transfer (not a post/void; valid id, not taken): its first failing
    check, or None. Reads `state`, writes nothing. `flags` is `int(t.flags)`."""
    status = _transfer_fields_refusal(t, flags)
    if status is not None:
        return status

    dr = state.accounts.get(t.debit_account_id)
    if dr is None:
        return T.DEBIT_ACCOUNT_NOT_FOUND
    cr = state.accounts.get(t.credit_account_id)
    if cr is None:
        return T.CREDIT_ACCOUNT_NOT_FOUND
    if dr.ledger != cr.ledger:
        return T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
    if t.ledger != dr.ledger:
        return T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS

    if flags & TF.IMPORTED:
        status = _imported_transfer_refusal(state, t, timestamp, dr, cr)
        if status is not None:
            return status
    assert timestamp > dr.timestamp and timestamp > cr.timestamp

    dr_flags = int(dr.flags)
    cr_flags = int(cr.flags)
    if dr_flags & AF.CLOSED:
        return T.DEBIT_ACCOUNT_ALREADY_CLOSED
    if cr_flags & AF.CLOSED:
        return T.CREDIT_ACCOUNT_ALREADY_CLOSED

    # Overflows, then the accounts' balance limits, for the amount the transfer would move.
    amount = _balancing_amount(t, flags, dr, cr) if flags & BALANCING_FLAGS else t.amount
    status = _overflow_status(dr, cr, amount, bool(flags & TF.PENDING), t.timeout, timestamp)
    if status is not None:
        return status
    if dr_flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and (
        dr.debits_pending + dr.debits_posted + amount > dr.credits_posted
    ):
        return T.EXCEEDS_CREDITS
    if cr_flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS and (
        cr.credits_pending + cr.credits_posted + amount > cr.debits_posted
    ):
        return T.EXCEEDS_DEBITS
    return None


def _transfer_fields_refusal(t: tb.Transfer, flags: int) -> tb.CreateTransferStatus | None:
    """The checks of a new transfer that read nothing but the transfer, in TigerBeetle's order."""
    if t.debit_account_id == 0:
        return T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if t.debit_account_id == U128_MAX:
        return T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
    if t.credit_account_id == 0:
        return T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if t.credit_account_id == U128_MAX:
        return T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
    if t.credit_account_id == t.debit_account_id:
        return T.ACCOUNTS_MUST_BE_DIFFERENT

    if t.pending_id != 0:
        return T.PENDING_ID_MUST_BE_ZERO
    if not flags & TF.PENDING:
        if t.timeout != 0:
            return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if flags & (TF.CLOSING_DEBIT | TF.CLOSING_CREDIT):
            return T.CLOSING_TRANSFER_MUST_BE_PENDING

    if t.ledger == 0:
        return T.LEDGER_MUST_NOT_BE_ZERO
    if t.code == 0:
        return T.CODE_MUST_NOT_BE_ZERO
    return None


def _imported_transfer_refusal(
    state: State, t: tb.Transfer, timestamp: int, dr: tb.Account, cr: tb.Account
) -> tb.CreateTransferStatus | None:
    """The checks of an imported new transfer, once its accounts are found: its timestamp, then its timeout."""
    status = _imported_transfer_timestamp_status(state, timestamp)
    if status is not None:
        return status
    if timestamp <= dr.timestamp:
        return T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT
    if timestamp <= cr.timestamp:
        return T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT
    if t.timeout != 0:
        assert int(t.flags) & TF.PENDING  # a timeout on any other transfer was refused before
        return T.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO
    return None


def _balancing_amount(t: tb.Transfer, flags: int, dr: tb.Account, cr: tb.Account) -> int:
    """What a balancing transfer moves: its amount, lowered to what the balance allows."""
    amount = t.amount
    if flags & TF.BALANCING_DEBIT:
        dr_balance = dr.debits_posted + dr.debits_pending
        amount = min(amount, max(dr.credits_posted - dr_balance, 0))
    if flags & TF.BALANCING_CREDIT:
        cr_balance = cr.credits_posted + cr.credits_pending
        amount = min(amount, max(cr.debits_posted - cr_balance, 0))
    return amount


def _apply_transfer(state: State, t: tb.Transfer, flags: int, timestamp: int) -> None:
    """Write a new transfer that `_transfer_refusal` accepted: the transfer, both accounts, history."""
    dr = state.accounts[t.debit_account_id]
    cr = state.accounts[t.credit_account_id]
    dr_flags = int(dr.flags)
    cr_flags = int(cr.flags)
    amount = _balancing_amount(t, flags, dr, cr) if flags & BALANCING_FLAGS else t.amount
    stored = tb.Transfer(
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        amount,
        0,
        t.user_data_128,
        t.user_data_64,
        t.user_data_32,
        t.timeout,
        t.ledger,
        t.code,
        _transfer_flags(t.flags, flags),
        timestamp,
    )
    expires_at = timestamp + t.timeout * NS_PER_S if t.timeout > 0 else None
    state.insert_transfer(stored, expires_at)

    dr_closed = tb.AccountFlags(dr_flags | AF.CLOSED) if flags & TF.CLOSING_DEBIT else None
    cr_closed = tb.AccountFlags(cr_flags | AF.CLOSED) if flags & TF.CLOSING_CREDIT else None
    if flags & TF.PENDING:
        state.set_balances(
            dr, dr.debits_pending + amount, dr.debits_posted, dr.credits_pending, dr.credits_posted, dr_closed
        )
        state.set_balances(
            cr, cr.debits_pending, cr.debits_posted, cr.credits_pending + amount, cr.credits_posted, cr_closed
        )
    else:
        state.set_balances(
            dr, dr.debits_pending, dr.debits_posted + amount, dr.credits_pending, dr.credits_posted, dr_closed
        )
        state.set_balances(
            cr, cr.debits_pending, cr.debits_posted, cr.credits_pending, cr.credits_posted + amount, cr_closed
        )
    # The balance limits the refusal checked before the write hold after it.
    assert not dr_flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS or (
        dr.debits_pending + dr.debits_posted <= dr.credits_posted
    )
    assert not cr_flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS or (
        cr.credits_pending + cr.credits_posted <= cr.debits_posted
    )
    _record_balances(state, timestamp, dr, cr, dr_flags, cr_flags)


def _transfer_flags(given: object, flags: int) -> tb.TransferFlags:
    # Enum members are immutable, so the caller's can be kept; building one costs a microsecond.
    return given if type(given) is tb.TransferFlags else tb.TransferFlags(flags)


def _imported_transfer_timestamp_status(state: State, timestamp: int) -> tb.CreateTransferStatus | None:
    if state.transfer_timestamp_max and timestamp <= state.transfer_timestamp_max:
        return T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    if timestamp in state.account_timestamps:
        return T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    return None


def _overflow_status(dr, cr, amount: int, pending: bool, timeout_s: int, timestamp: int):
    if pending:
        if amount + dr.debits_pending > U128_MAX:
            return T.OVERFLOWS_DEBITS_PENDING
        if amount + cr.credits_pending > U128_MAX:
            return T.OVERFLOWS_CREDITS_PENDING
    if amount + dr.debits_posted > U128_MAX:
        return T.OVERFLOWS_DEBITS_POSTED
    if amount + cr.credits_posted > U128_MAX:
        return T.OVERFLOWS_CREDITS_POSTED
    if amount + dr.debits_pending + dr.debits_posted > U128_MAX:
        return T.OVERFLOWS_DEBITS
    if amount + cr.credits_pending + cr.credits_posted > U128_MAX:
        return T.OVERFLOWS_CREDITS
    if timestamp + timeout_s * NS_PER_S > TIMESTAMP_MAX:
        return T.OVERFLOWS_TIMEOUT
    return None


def _create_transfer_exists(state: State, t: tb.Transfer, e: tb.Transfer) -> tb.CreateTransferStatus:
    # The flags change the meaning of the other fields, so they are compared first.
    if int(t.flags) != int(e.flags):
        return T.EXISTS_WITH_DIFFERENT_FLAGS
    if t.pending_id != e.pending_id:
        return T.EXISTS_WITH_DIFFERENT_PENDING_ID
    if t.timeout != e.timeout:
        return T.EXISTS_WITH_DIFFERENT_TIMEOUT
    if int(t.flags) & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
        return _post_or_void_exists(t, e, state.transfers[t.pending_id])
    if t.debit_account_id != e.debit_account_id:
        return T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != e.credit_account_id:
        return T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    # A balancing transfer's amount is an upper limit: a resubmission may carry a larger limit
    # than what was moved, and is still the same transfer.
    if int(t.flags) & (TF.BALANCING_DEBIT | TF.BALANCING_CREDIT):
        if t.amount < e.amount:
            return T.EXISTS_WITH_DIFFERENT_AMOUNT
    elif t.amount != e.amount:
        return T.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.user_data_128 != e.user_data_128:
        return T.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if t.user_data_64 != e.user_data_64:
        return T.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if t.user_data_32 != e.user_data_32:
        return T.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if t.ledger != e.ledger:
        return T.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != e.code:
        return T.EXISTS_WITH_DIFFERENT_CODE
    return T.EXISTS


def _post_or_void_exists(t: tb.Transfer, e: tb.Transfer, p: tb.Transfer) -> tb.CreateTransferStatus:
    if t.debit_account_id != 0 and t.debit_account_id != e.debit_account_id:
        return T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != 0 and t.credit_account_id != e.credit_account_id:
        return T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if int(t.flags) & TF.VOID_PENDING_TRANSFER:
        if (e.amount != p.amount) if t.amount == 0 else (t.amount != e.amount):
            return T.EXISTS_WITH_DIFFERENT_AMOUNT
    if int(t.flags) & TF.POST_PENDING_TRANSFER:
        if (e.amount != p.amount) if t.amount == U128_MAX else (t.amount != e.amount):
            return T.EXISTS_WITH_DIFFERENT_AMOUNT
    for name, status in (
        ("user_data_128", T.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ("user_data_64", T.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ("user_data_32", T.EXISTS_WITH_DIFFERENT_USER_DATA_32),
    ):
        requested = getattr(t, name)
        expected = getattr(p, name) if requested == 0 else requested
        if getattr(e, name) != expected:
            return status
    if t.ledger != 0 and t.ledger != e.ledger:
        return T.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != 0 and t.code != e.code:
        return T.EXISTS_WITH_DIFFERENT_CODE
    return T.EXISTS


def _post_or_void_refusal(state: State, t: tb.Transfer, flags: int, timestamp: int) -> tb.CreateTransferStatus | None:
    """Why TigerBeetle refuses a post or void (valid id, not taken): its first failing check, or None.

    Reads `state`, writes nothing. `flags` is `int(t.flags)`.
    """
    status = _post_or_void_fields_refusal(t, flags)
    if status is not None:
        return status

    p = state.transfers.get(t.pending_id)
    if p is None:
        return T.PENDING_TRANSFER_NOT_FOUND
    if not int(p.flags) & TF.PENDING:
        return T.PENDING_TRANSFER_NOT_PENDING
    status = _pending_transfer_mismatch(t, flags, p)
    if status is not None:
        return status
    status = _pending_transfer_state_refusal(state, p, timestamp)
    if status is not None:
        return status

    if flags & TF.IMPORTED:
        status = _imported_transfer_timestamp_status(state, timestamp)
        if status is not None:
            return status
    dr = state.accounts[p.debit_account_id]
    cr = state.accounts[p.credit_account_id]
    assert timestamp > dr.timestamp and timestamp > cr.timestamp

    # The only movement allowed on a closed account is voiding a pending transfer.
    if not flags & TF.VOID_PENDING_TRANSFER:
        if int(dr.flags) & AF.CLOSED:
            return T.DEBIT_ACCOUNT_ALREADY_CLOSED
        if int(cr.flags) & AF.CLOSED:
            return T.CREDIT_ACCOUNT_ALREADY_CLOSED
    return None


def _post_or_void_fields_refusal(t: tb.Transfer, flags: int) -> tb.CreateTransferStatus | None:
    """The checks of a post or void that read nothing but the transfer, in TigerBeetle's order."""
    if flags & TF.POST_PENDING_TRANSFER and flags & TF.VOID_PENDING_TRANSFER:
        return T.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if flags & (TF.PENDING | TF.BALANCING_DEBIT | TF.BALANCING_CREDIT | TF.CLOSING_DEBIT | TF.CLOSING_CREDIT):
        return T.FLAGS_ARE_MUTUALLY_EXCLUSIVE

    if t.pending_id == 0:
        return T.PENDING_ID_MUST_NOT_BE_ZERO
    if t.pending_id == U128_MAX:
        return T.PENDING_ID_MUST_NOT_BE_INT_MAX
    if t.pending_id == t.id:
        return T.PENDING_ID_MUST_BE_DIFFERENT
    if t.timeout != 0:
        return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    return None


def _pending_transfer_mismatch(t: tb.Transfer, flags: int, p: tb.Transfer) -> tb.CreateTransferStatus | None:
    """Fields a post or void may leave zero, but when given must match its pending transfer `p`."""
    if t.debit_account_id > 0 and t.debit_account_id != p.debit_account_id:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id > 0 and t.credit_account_id != p.credit_account_id:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    # user_data may differ between a pending transfer and its post/void.
    if t.ledger > 0 and t.ledger != p.ledger:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
    if t.code > 0 and t.code != p.code:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_CODE

    amount = _post_or_void_amount(t, flags, p)
    if amount > p.amount:
        return T.EXCEEDS_PENDING_TRANSFER_AMOUNT
    if flags & TF.VOID_PENDING_TRANSFER and amount < p.amount:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
    return None


def _pending_transfer_state_refusal(state: State, p: tb.Transfer, timestamp: int) -> tb.CreateTransferStatus | None:
    """A pending transfer can be posted or voided once, and only before its timeout."""
    pending_status = state.pending_status[p.id]
    if pending_status == PendingStatus.POSTED:
        return T.PENDING_TRANSFER_ALREADY_POSTED
    if pending_status == PendingStatus.VOIDED:
        return T.PENDING_TRANSFER_ALREADY_VOIDED
    if pending_status == PendingStatus.EXPIRED:
        return T.PENDING_TRANSFER_EXPIRED
    assert pending_status == PendingStatus.PENDING
    if p.timeout > 0 and p.timestamp + p.timeout * NS_PER_S <= timestamp:
        return T.PENDING_TRANSFER_EXPIRED
    return None


def _post_or_void_amount(t: tb.Transfer, flags: int, p: tb.Transfer) -> int:
    """What a post or void of `p` moves: a void's 0 and a post's `AMOUNT_MAX` mean all of it."""
    if flags & TF.VOID_PENDING_TRANSFER:
        return t.amount if t.amount > 0 else p.amount
    return p.amount if t.amount == U128_MAX else t.amount


def _apply_post_or_void(state: State, t: tb.Transfer, flags: int, timestamp: int) -> None:
    """Write a post or void that `_post_or_void_refusal` accepted: the transfer, the pending transfer's
    status, both accounts (releasing the whole pending amount, posting `amount`), history."""
    posting = bool(flags & TF.POST_PENDING_TRANSFER)
    voiding = bool(flags & TF.VOID_PENDING_TRANSFER)
    assert posting != voiding
    p = state.transfers[t.pending_id]
    dr = state.accounts[p.debit_account_id]
    cr = state.accounts[p.credit_account_id]
    amount = _post_or_void_amount(t, flags, p)
    assert amount <= p.amount
    assert dr.debits_pending >= p.amount and cr.credits_pending >= p.amount
    stored = tb.Transfer(
        id=t.id,
        debit_account_id=p.debit_account_id,
        credit_account_id=p.credit_account_id,
        amount=amount,
        pending_id=t.pending_id,
        user_data_128=t.user_data_128 or p.user_data_128,
        user_data_64=t.user_data_64 or p.user_data_64,
        user_data_32=t.user_data_32 or p.user_data_32,
        timeout=0,
        ledger=p.ledger,
        code=p.code,
        flags=_transfer_flags(t.flags, flags),
        timestamp=timestamp,
    )
    state.insert_transfer(stored, None)
    state.set_pending_status(p.id, PendingStatus.POSTED if posting else PendingStatus.VOIDED)
    posted = amount if posting else 0
    dr_flags = int(dr.flags)
    cr_flags = int(cr.flags)
    p_flags = int(p.flags)
    # Voiding a closing transfer reopens the account (posting one is impossible: it is closed).
    dr_reopened = _reopened(dr_flags, p_flags & TF.CLOSING_DEBIT and voiding)
    cr_reopened = _reopened(cr_flags, p_flags & TF.CLOSING_CREDIT and voiding)
    state.set_balances(
        dr, dr.debits_pending - p.amount, dr.debits_posted + posted, dr.credits_pending, dr.credits_posted, dr_reopened
    )
    state.set_balances(
        cr, cr.debits_pending, cr.debits_posted, cr.credits_pending - p.amount, cr.credits_posted + posted, cr_reopened
    )
    _record_balances(state, timestamp, dr, cr, dr_flags, cr_flags)


def _reopened(account_flags: int, reopen: int | bool) -> tb.AccountFlags | None:
    return tb.AccountFlags(account_flags & ~AF.CLOSED) if reopen else None


def _record_balances(
    state: State, timestamp: int, dr: tb.Account, cr: tb.Account, dr_flags: int, cr_flags: int
) -> None:
    dr_history = bool(dr_flags & AF.HISTORY)
    cr_history = bool(cr_flags & AF.HISTORY)
    if dr_history or cr_history:
        state.add_balance_event(
            BalanceEvent(
                timestamp=timestamp,
                debit_account_id=dr.id,
                credit_account_id=cr.id,
                debit_balance=Balance.of(dr) if dr_history else None,
                credit_balance=Balance.of(cr) if cr_history else None,
            )
        )


# -- expiry (TigerBeetle's pulse) -----------------------------------------------------------------


def due_expiries(state: State, now_timestamp: int, limit: int) -> list[int]:
    """Ids of pending transfers whose timeout has passed at `now_timestamp`, earliest first."""
    due: list[int] = []
    heap = state.expiry_heap
    while heap and heap[0][0] <= now_timestamp and len(due) < limit:
        expires_at, timestamp, transfer_id = heapq.heappop(heap)
        if _expiry_is_current(state, expires_at, timestamp, transfer_id):
            due.append(transfer_id)
    return due


def _expiry_is_current(state: State, expires_at: int, timestamp: int, transfer_id: int) -> bool:
    """Whether an expiry entry belongs to the transfer stored under its id, and that one is still pending.

    Entries are never removed, so one goes stale when its transfer is posted or voided, or is rolled back
    with its linked chain and the id then taken by another transfer (with another timeout, or none).
    """
    p = state.transfers.get(transfer_id)
    return (
        p is not None
        and p.timestamp == timestamp
        and p.timeout > 0
        and p.timestamp + p.timeout * NS_PER_S == expires_at
        and state.pending_status[transfer_id] == PendingStatus.PENDING
    )


def expire_pending_transfers(state: State, transfer_ids: list[int], batch_timestamp: int) -> None:
    """Release the pending amounts of `transfer_ids` (already due), one timestamp each."""
    for transfer_id, event_timestamp in zip(
        transfer_ids, event_timestamps(batch_timestamp, len(transfer_ids)), strict=True
    ):
        p = state.transfers[transfer_id]
        p_flags = int(p.flags)
        assert p_flags & TF.PENDING and p.timeout > 0
        assert p.timestamp + p.timeout * NS_PER_S <= event_timestamp
        dr = state.accounts[p.debit_account_id]
        cr = state.accounts[p.credit_account_id]
        assert dr.debits_pending >= p.amount and cr.credits_pending >= p.amount
        # Expiry reopens an account the expired transfer was closing; closed accounts still expire.
        state.set_balances(
            dr,
            dr.debits_pending - p.amount,
            dr.debits_posted,
            dr.credits_pending,
            dr.credits_posted,
            _reopened(int(dr.flags), p_flags & TF.CLOSING_DEBIT),
        )
        state.set_balances(
            cr,
            cr.debits_pending,
            cr.debits_posted,
            cr.credits_pending - p.amount,
            cr.credits_posted,
            _reopened(int(cr.flags), p_flags & TF.CLOSING_CREDIT),
        )
        state.set_pending_status(transfer_id, PendingStatus.EXPIRED)
