"""IPPS_TRANSFER: money leaving the wallet through the IPPS PSP (IPPS_WITHDRAWAL, THAI_QR_PAY).

authorize  user:sender -> transit   a + f   pending, timeout `psp_hold_timeout_s`     (dispatch)
submit     POST the payout to the PSP, by our reference (the intent id): idempotent    (dispatch, then
           settlement whenever it finds the PSP does not know the payout)
outcome    SUCCEEDED: post the hold; transit -> psp:IPPS_TRANSFER  a - g; transit -> fees  f + g
           DECLINED:  void the hold (FAILED PSP_DECLINED)
           none by `psp_outcome_deadline_s` after authorization: void (FAILED EXPIRED), before the
           ledger's own timeout releases the hold (the backstop)
The intent stays AUTHORIZED until an outcome: a signed callback (gateway/psp_callbacks.py), or the
status the settlement stage asks for when the poller re-drives an intent that waits too long.
"""

from __future__ import annotations

import time

import tigerbeetle as tb

from channels.base import Channel
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain import ErrorCode, Intent, OperationType
from pm.psp_client import PspClient
from pm.settings import Settings

SUCCEEDED = "SUCCEEDED"
DECLINED = "DECLINED"


class IppsTransfer(Channel):
    name = "IPPS_TRANSFER"
    operation_types = frozenset({OperationType.IPPS_WITHDRAWAL, OperationType.THAI_QR_PAY})
    settles_instantly = False
    hold_timeout_s = 900
    outcome_deadline_s = 600  # give up (void) this long after authorization, before the hold expires

    def configure(self, settings: Settings) -> None:
        self.hold_timeout_s = settings.psp_hold_timeout_s
        self.outcome_deadline_s = settings.psp_outcome_deadline_s
        assert self.outcome_deadline_s < self.hold_timeout_s, "void before the ledger's timeout does"

    def refusal(self, intent: Intent) -> tuple[ErrorCode, str] | None:
        if intent.sender_id is None or intent.recipient_id is not None or intent.merchant_id is not None:
            return ErrorCode.INVALID_PARTY, "a payout has a sender and no recipient in the wallet"
        if not intent.destination_ref:
            return ErrorCode.INVALID_PARTY, "a payout needs destination_ref"
        return None

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        assert intent.sender_id is not None
        return [
            accounts.user(intent.sender_id, intent.currency),
            accounts.transit(intent.currency),
            accounts.fees(intent.currency),
            accounts.psp(self.name, intent.currency),
        ]

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        assert intent.sender_id is not None
        sender = accounts.user(intent.sender_id, intent.currency)
        return [self.hold(intent, sender, intent.amount_minor + intent.fee_pre_minor)]

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        hold = self.post_hold(intent, intent.amount_minor + intent.fee_pre_minor)
        return self.pay_out(intent, hold, accounts.psp(self.name, intent.currency), payee_leg="payout")

    # -- the PSP ---------------------------------------------------------------------------------

    async def submit_one(self, intent: Intent, psp: PspClient) -> str:
        """Send the payout (or find the one sent before); the PSP's status of it."""
        assert intent.destination_ref is not None
        return await psp.submit_payout(
            str(intent.id),
            amount_minor=intent.amount_minor - intent.fee_post_minor,
            currency=intent.currency,
            destination_ref=intent.destination_ref,
            hold_expires_at_s=self.hold_expires_at_s(intent),
        )

    async def status(self, intent: Intent, psp: PspClient) -> str | None:
        return await psp.payout_status(str(intent.id))

    def hold_expires_at_s(self, intent: Intent) -> int:
        authorized_s = intent.updated_at.timestamp() if intent.updated_at else time.time()
        return int(authorized_s) + self.hold_timeout_s

    def past_deadline(self, intent: Intent, now_s: float) -> bool:
        """No outcome yet and too late to wait: void now, before the ledger's timeout would."""
        assert intent.updated_at is not None, "an AUTHORIZED intent comes from its row"
        return now_s - intent.updated_at.timestamp() >= self.outcome_deadline_s

    @staticmethod
    def outcome(psp_status: str | None) -> str | None:
        """SUCCEEDED, DECLINED, or None (not final: PROCESSING, unknown)."""
        return psp_status if psp_status in (SUCCEEDED, DECLINED) else None
