"""The channel interface: how an intent's money moves, one file per payment method (DESIGN.md §1, §3).

A channel turns an intent into ledger transfers and, for external channels, talks to a PSP. The stages
(validation, dispatch, settlement) call these methods for a whole batch and make one ledger call per
batch; channels never touch the database or the ledger themselves. Legs follow DESIGN.md §4: every
movement passes through `transit:{currency}` in linked chains, so transit returns to zero.

Lifecycle, and which stage calls what:
    validation  refusal(intent)            channel-specific checks -> error or None
                accounts(intent)           ledger accounts to create on first use
    dispatch    authorize(intent)          the hold: pending transfer(s) into transit
                submit(intents)            external channels: send to the PSP (instant: nothing)
    settlement  settle(intent)             post the hold and pay out, one linked chain
                void(intent)               release the hold (FAILED)
    gateway     parse_callback(...)        external channels: a PSP's webhook -> PspOutcome
    poller      poll_status(intent)        external channels: ask the PSP -> PspOutcome or None
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import tigerbeetle as tb

from ledger import accounts
from ledger.accounts import NamedAccount, currency_ledger, transfer_id
from pm.domain import OPERATION_CODE, ErrorCode, Intent, OperationType


class PspResult(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"
    PROCESSING = "PROCESSING"


@dataclass(frozen=True, slots=True)
class PspOutcome:
    """What a PSP says about one of our payments: by our reference (the intent id) and its event id."""

    intent_reference: str
    result: PspResult
    event_id: str


HOLD_LEG = "hold"
POST_LEG = "post"
VOID_LEG = "void"


class Channel:
    """Base class: an instant channel with no PSP. Subclasses set the class variables."""

    name: ClassVar[str]
    operation_types: ClassVar[frozenset[OperationType]]
    settles_instantly: ClassVar[bool] = True
    hold_timeout_s: ClassVar[int] = 300  # the ledger releases an unsettled hold after this

    def refusal(self, intent: Intent) -> tuple[ErrorCode, str] | None:
        return None

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        raise NotImplementedError

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        raise NotImplementedError

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        raise NotImplementedError

    def void(self, intent: Intent) -> list[tb.Transfer]:
        return [
            tb.Transfer(
                id=transfer_id(intent.id, VOID_LEG),
                pending_id=transfer_id(intent.id, HOLD_LEG),
                user_data_128=intent.id.int,
                flags=tb.TransferFlags.VOID_PENDING_TRANSFER,
            )
        ]

    async def submit(self, intents: list[Intent]) -> None:
        """External channels send the payouts to their PSP here; instant channels have nothing to do."""
        return None

    def parse_callback(self, headers: dict[str, str], body: bytes) -> PspOutcome:
        """External channels: verify and read a PSP webhook. Instant channels receive none."""
        raise NotImplementedError(f"channel {self.name} settles instantly and takes no callbacks")

    async def poll_status(self, intent: Intent) -> PspOutcome | None:
        """External channels: ask the PSP what became of the payment; None when it does not know yet."""
        raise NotImplementedError(f"channel {self.name} settles instantly; there is no status to poll")

    # -- helpers for subclasses ----------------------------------------------------------------

    @staticmethod
    def leg(intent: Intent, name: str, debit: NamedAccount, credit: NamedAccount, amount_minor: int) -> tb.Transfer:
        assert amount_minor >= 0, amount_minor
        return tb.Transfer(
            id=transfer_id(intent.id, name),
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount_minor,
            user_data_128=intent.id.int,
            ledger=currency_ledger(intent.currency),
            code=OPERATION_CODE[intent.operation_type],
        )

    def hold(self, intent: Intent, debit: NamedAccount, amount_minor: int) -> tb.Transfer:
        transfer = self.leg(intent, HOLD_LEG, debit, accounts.transit(intent.currency), amount_minor)
        transfer.flags = tb.TransferFlags.PENDING
        transfer.timeout = self.hold_timeout_s
        return transfer

    @staticmethod
    def post_hold(intent: Intent, amount_minor: int) -> tb.Transfer:
        return tb.Transfer(
            id=transfer_id(intent.id, POST_LEG),
            pending_id=transfer_id(intent.id, HOLD_LEG),
            amount=amount_minor,
            user_data_128=intent.id.int,
            flags=tb.TransferFlags.POST_PENDING_TRANSFER,
        )


def linked(chain: list[tb.Transfer]) -> list[tb.Transfer]:
    """Link a chain: every transfer but the last carries LINKED (all or nothing)."""
    assert chain
    for transfer in chain[:-1]:
        transfer.flags |= tb.TransferFlags.LINKED
    assert not chain[-1].flags & tb.TransferFlags.LINKED
    return chain
