"""IPPS_TRANSFER: money leaving the wallet through the IPPS PSP (IPPS_WITHDRAWAL, THAI_QR_PAY).

authorize  user:sender -> transit   a + f   pending, timeout `psp_hold_timeout_s`     (dispatch)
submit     POST the payout to the PSP, by our reference (the intent id): idempotent,  (the ipps-connector
           with `hold_expires_at` = when PM gives up (the outcome deadline); only     stage, only)
           while the hold is live and before the submit deadline
outcome    SUCCEEDED: post the hold; transit -> psp:IPPS_TRANSFER  a - g; transit -> fees  f + g
           DECLINED:  void the hold (FAILED PSP_DECLINED)
           none by `psp_outcome_deadline_s` after the hold: void (FAILED EXPIRED), before the
           ledger's own timeout releases the hold (the backstop)
The intent stays AUTHORIZED until an outcome: a signed callback (gateway/psp_callbacks.py), or the
status the settlement stage asks for when the poller re-drives an intent that waits too long.
"""

from __future__ import annotations

import tigerbeetle as tb

from channels.base import PspChannel
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain.intent import Hold, Intent, OperationType
from pm.domain.psp import Provider, PspOutcome, PspReport
from pm.psp.client import PspClient

# IPPS's payout statuses that decide; PROCESSING and anything else decide nothing yet.
OUTCOMES = {"SUCCEEDED": PspOutcome.SUCCEEDED, "DECLINED": PspOutcome.DECLINED}


class IppsTransfer(PspChannel):
    name = "IPPS_TRANSFER"
    provider = Provider.IPPS
    currencies = frozenset({"THB"})  # IPPS pays out in baht only (Thai bank accounts, PromptPay)
    operation_types = frozenset({OperationType.IPPS_WITHDRAWAL, OperationType.THAI_QR_PAY})

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

    async def submit_one(self, intent: Intent, hold: Hold, psp: PspClient, now_s: float) -> str:
        """Send the payout (or find the one sent before); the PSP's status of it. The PSP must not pay
        after `hold_expires_at`: when PM would give up on it (`pay_by_s`), rounded down."""
        assert intent.destination_ref is not None and self.may_submit(hold, now_s)
        return await psp.submit_payout(
            self.provider,
            str(intent.id),
            callback_url=psp.callback_url(self.name),
            amount_minor=self.psp_amount_minor(intent),
            currency=intent.currency,
            destination_ref=intent.destination_ref,
            hold_expires_at_s=int(self.pay_by_s(hold)),
        )

    def psp_amount_minor(self, intent: Intent) -> int:
        """What leaves to the payee: the amount less the POST fee."""
        return intent.amount_minor - intent.fee_post_minor

    async def report(self, intent: Intent, psp: PspClient) -> PspReport | None:
        return await psp.payout_status(self.provider, str(intent.id))

    @staticmethod
    def outcome(psp_status: str | None) -> PspOutcome | None:
        """SUCCEEDED, DECLINED, or None (not final: PROCESSING, unknown)."""
        return OUTCOMES.get(psp_status or "")
