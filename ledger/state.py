"""The data one ledger request reads and writes, with undo for linked chains.

The state machine (`ledger/engine.py`) never touches storage. It reads and writes a `State`: the
memory backend keeps one `State` for its whole life; the PostgreSQL backend loads a `State` with
just the rows a batch touches, runs the same state machine on it, then writes back what changed.
One state machine, two stores: the backends cannot drift apart in semantics.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import tigerbeetle as tb

PENDING_FLAG = int(tb.TransferFlags.PENDING)


class PendingStatus(enum.IntEnum):
    """What became of a pending transfer (TigerBeetle's `TransferPendingStatus`)."""

    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4


@dataclass(slots=True, frozen=True)
class Balance:
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @staticmethod
    def of(account: tb.Account) -> Balance:
        return Balance(
            account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted
        )


@dataclass(slots=True, frozen=True)
class BalanceEvent:
    """Both accounts' balances right after the transfer with this timestamp (for `history`)."""

    timestamp: int
    debit_account_id: int
    credit_account_id: int
    debit_balance: Balance | None  # None unless the debit account has flags.history
    credit_balance: Balance | None


@dataclass(slots=True)
class State:
    """Objects by id, plus what a request changed (for the PostgreSQL backend to write back)."""

    accounts: dict[int, tb.Account] = field(default_factory=dict)
    transfers: dict[int, tb.Transfer] = field(default_factory=dict)
    pending_status: dict[int, PendingStatus] = field(default_factory=dict)  # by pending transfer id
    orphan_ids: set[int] = field(default_factory=set)  # transfer ids that failed transiently
    balance_events: dict[int, BalanceEvent] = field(default_factory=dict)  # by transfer timestamp
    # Pending transfers with a timeout: (expires_at_ns, timestamp, id); stale entries are skipped.
    expiry_heap: list[tuple[int, int, int]] = field(default_factory=list)
    # For imported events: the greatest timestamps, and timestamps known to be taken.
    account_timestamp_max: int = 0
    transfer_timestamp_max: int = 0
    account_timestamps: set[int] = field(default_factory=set)
    transfer_timestamps: set[int] = field(default_factory=set)
    # Change tracking, read by the PostgreSQL backend after a request.
    touched_account_ids: set[int] = field(default_factory=set)
    new_account_ids: list[int] = field(default_factory=list)
    new_transfer_ids: list[int] = field(default_factory=list)
    touched_pending_ids: set[int] = field(default_factory=set)
    new_orphan_ids: list[int] = field(default_factory=list)
    new_balance_events: list[BalanceEvent] = field(default_factory=list)
    # Undo log of the open linked chain; None when no chain is open.
    _undo: list[Callable[[], None]] | None = None
    # Listeners for the memory backend's indexes (called on insert, and on rollback of an insert).
    on_transfer_inserted: Callable[[tb.Transfer], None] | None = None
    on_transfer_removed: Callable[[tb.Transfer], None] | None = None

    # -- linked chains -----------------------------------------------------------------------

    def chain_open(self) -> None:
        assert self._undo is None, "a linked chain is already open"
        self._undo = []

    def chain_persist(self) -> None:
        assert self._undo is not None
        self._undo = None

    def chain_discard(self) -> None:
        assert self._undo is not None
        for undo in reversed(self._undo):
            undo()
        self._undo = None

    def _record(self, undo: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(undo)

    # -- writes ------------------------------------------------------------------------------

    def insert_account(self, account: tb.Account) -> None:
        assert account.id not in self.accounts
        self.accounts[account.id] = account
        self.touched_account_ids.add(account.id)
        self.new_account_ids.append(account.id)
        previous_max = self.account_timestamp_max
        self.account_timestamp_max = max(previous_max, account.timestamp)
        self.account_timestamps.add(account.timestamp)

        def undo() -> None:
            del self.accounts[account.id]
            self.account_timestamp_max = previous_max
            self.account_timestamps.discard(account.timestamp)

        self._record(undo)

    def set_balances(
        self,
        account: tb.Account,
        debits_pending: int,
        debits_posted: int,
        credits_pending: int,
        credits_posted: int,
        flags: tb.AccountFlags | None = None,
    ) -> None:
        """Change an account in place (no copy: this runs twice per transfer)."""
        assert self.accounts[account.id] is account
        assert min(debits_pending, debits_posted, credits_pending, credits_posted) >= 0
        if self._undo is not None:
            old = (
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
                account.flags,
            )

            def undo() -> None:
                (
                    account.debits_pending,
                    account.debits_posted,
                    account.credits_pending,
                    account.credits_posted,
                    account.flags,
                ) = old

            self._undo.append(undo)
        account.debits_pending = debits_pending
        account.debits_posted = debits_posted
        account.credits_pending = credits_pending
        account.credits_posted = credits_posted
        if flags is not None:
            account.flags = flags
        self.touched_account_ids.add(account.id)

    def insert_transfer(self, transfer: tb.Transfer, expires_at_ns: int | None) -> None:
        assert transfer.id not in self.transfers
        self.transfers[transfer.id] = transfer
        self.new_transfer_ids.append(transfer.id)
        previous_max = self.transfer_timestamp_max
        self.transfer_timestamp_max = max(previous_max, transfer.timestamp)
        self.transfer_timestamps.add(transfer.timestamp)
        if int(transfer.flags) & PENDING_FLAG:
            self.pending_status[transfer.id] = PendingStatus.PENDING
            self.touched_pending_ids.add(transfer.id)
        if expires_at_ns is not None:
            heapq.heappush(self.expiry_heap, (expires_at_ns, transfer.timestamp, transfer.id))
        if self.on_transfer_inserted is not None:
            self.on_transfer_inserted(transfer)

        def undo() -> None:
            del self.transfers[transfer.id]
            self.pending_status.pop(transfer.id, None)
            self.transfer_timestamp_max = previous_max
            self.transfer_timestamps.discard(transfer.timestamp)
            if self.on_transfer_removed is not None:
                self.on_transfer_removed(transfer)
            # The expiry entry stays: expiry skips one whose id is gone, not pending, or another transfer's.

        self._record(undo)

    def set_pending_status(self, pending_id: int, status: PendingStatus) -> None:
        old = self.pending_status[pending_id]
        assert old == PendingStatus.PENDING, (pending_id, old)
        self.pending_status[pending_id] = status
        self.touched_pending_ids.add(pending_id)
        self._record(lambda: self.pending_status.__setitem__(pending_id, old))

    def add_orphan_id(self, transfer_id: int) -> None:
        # Never undone: TigerBeetle records a transient failure even inside a failed chain.
        if transfer_id not in self.orphan_ids:
            self.orphan_ids.add(transfer_id)
            self.new_orphan_ids.append(transfer_id)

    def add_balance_event(self, event: BalanceEvent) -> None:
        self.balance_events[event.timestamp] = event
        self.new_balance_events.append(event)

        def undo() -> None:
            del self.balance_events[event.timestamp]
            self.new_balance_events.remove(event)

        self._record(undo)

    def clear_changes(self) -> None:
        assert self._undo is None
        self.touched_account_ids.clear()
        self.new_account_ids.clear()
        self.new_transfer_ids.clear()
        self.touched_pending_ids.clear()
        self.new_orphan_ids.clear()
        self.new_balance_events.clear()


def copy_account(account: tb.Account) -> tb.Account:
    return dataclasses.replace(account)


def copy_transfer(transfer: tb.Transfer) -> tb.Transfer:
    return dataclasses.replace(transfer)
