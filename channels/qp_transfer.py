"""QP_TRANSFER: top-ups through the QP PSP (QP_TOPUP): the user pays a QR payment request at QP, and the
money arrives in the wallet.

dispatch   hold psp:QP_TRANSFER -> transit  a + f  pending, timeout `psp_hold_timeout_s` (what QP will
           owe us), then a job on the `qp-connector` stage's stream
connector  POST the payment request to QP by our reference (the intent id, idempotent), valid until
           PM gives up (the outcome deadline); only while the hold is live and before the submit deadline
                                                                         -> AUTHORIZED (awaiting the money)
outcome    PAID: post the hold; transit -> user  a - g; transit -> fees  f + g (SETTLED)
           EXPIRED, or nothing by `psp_outcome_deadline_s` after the hold: void (FAILED EXPIRED)
The hold makes the ledger the arbiter, as for payouts: a PAID that comes after PM voided can never
credit the user, whichever consumer sees it (posting a voided or expired hold fails), and it is
flagged for review.
`psp:QP_TRANSFER:THB` is the clearing account of what QP owes us: it goes negative by what users paid
at QP until QP pays out to our bank (reconciliation, outside PM). A payment reported after PM failed
the intent is flagged for review, never credited silently (the user paid: an operator credits or
refunds).
"""

from __future__ import annotations

import tigerbeetle as tb

from channels.base import PspChannel
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain.intent import Hold, Intent, OperationType
from pm.domain.psp import Provider, PspOutcome, PspReport
from pm.psp.client import PspClient

# QP's payment request statuses that decide; PENDING and anything else decide nothing yet.
OUTCOMES = {"PAID": PspOutcome.SUCCEEDED, "EXPIRED": PspOutcome.EXPIRED}
# QP's longest payment request (its API: 1 to 86,400 s); a longer hold just outlives its request.
REQUEST_VALID_S_MAX = 86_400


class QpTransfer(PspChannel):
    name = "QP_TRANSFER"
    provider = Provider.QP
    currencies = frozenset({"THB"})  # QP collects baht only (Thai QR payments)
    operation_types = frozenset({OperationType.QP_TOPUP})

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        assert intent.recipient_id is not None
        return [
            accounts.user(intent.recipient_id, intent.currency),
            accounts.transit(intent.currency),
            accounts.fees(intent.currency),
            accounts.psp(self.name, intent.currency),
        ]

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        # What QP will owe us once the user pays: pending until QP says PAID (posted) or PM gives up (voided).
        return [self.hold(intent, accounts.psp(self.name, intent.currency), self.charged_minor(intent))]

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        assert intent.recipient_id is not None
        paid = self.post_hold(intent, self.charged_minor(intent))
        return self.pay_out(intent, paid, accounts.user(intent.recipient_id, intent.currency))

    @staticmethod
    def charged_minor(intent: Intent) -> int:
        """What the user pays at QP: the amount and the PRE fee."""
        return intent.amount_minor + intent.fee_pre_minor

    # -- the PSP ---------------------------------------------------------------------------------

    async def submit_one(self, intent: Intent, hold: Hold, psp: PspClient, now_s: float) -> str:
        """Create the QR payment request, valid until PM would give up on it (`pay_by_s`, whole seconds,
        rounded down): the user can never pay a request whose money PM no longer holds for it."""
        assert self.may_submit(hold, now_s)
        valid_s = min(int(self.pay_by_s(hold) - now_s), REQUEST_VALID_S_MAX)
        assert valid_s >= 1, "the submit deadline comes at least a second before the outcome deadline"
        return await psp.submit_payment_request(
            self.provider,
            str(intent.id),
            callback_url=psp.callback_url(self.name),
            amount_minor=self.psp_amount_minor(intent),
            currency=intent.currency,
            expires_in_s=valid_s,
        )

    def psp_amount_minor(self, intent: Intent) -> int:
        return self.charged_minor(intent)

    async def report(self, intent: Intent, psp: PspClient) -> PspReport | None:
        return await psp.payment_request_status(self.provider, str(intent.id))

    @staticmethod
    def outcome(psp_status: str | None) -> PspOutcome | None:
        return OUTCOMES.get(psp_status or "")
