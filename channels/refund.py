"""REFUND: money back the way it came, for a SETTLED P2P_TRANSFER or MINIAPP_CHARGE (`refund_of`); instant.

The refund's parties are the original's, swapped (pm/domain/parties.py `refund_parties`): who was paid
pays. Of a P2P_TRANSFER the original recipient is the refund's sender; of a MINIAPP_CHARGE the merchant
pays and the user who was charged is the recipient. Amount: 1 to what is left of the original
(`pm.intent.refunded_minor`, reserved at creation, sql/0019), in the original's currency.

authorize  payer (user:sender | merchant) -> transit   a + f   pending, with a timeout
settle     post the hold (a + f); transit -> user:recipient  a - g; transit -> fees  f + g

Fees: the original's fees are kept (not given back): they paid for a transfer that happened, and a
refund is a new movement, the way card networks treat them. A refund is priced by the fee rules like any
intent (`operation_type == "REFUND"`); none ship, so by default a refund gives back exactly its amount.
A payer without the money (`exceeds_credits` at the hold) ends REJECTED INSUFFICIENT_FUNDS with nothing
held, and the history stage gives its reservation back to the original.
"""

from __future__ import annotations

import tigerbeetle as tb

from channels.base import Channel
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain.intent import ErrorCode, Intent, OperationType


class Refund(Channel):
    name = "REFUND"
    operation_types = frozenset({OperationType.REFUND})

    def refusal(self, intent: Intent) -> tuple[ErrorCode, str] | None:
        if intent.refund_of is None:
            return ErrorCode.INVALID_PARTY, "a REFUND names the intent it refunds (refund_of)"
        return None

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        return [
            self._payer(intent),
            self._payee(intent),
            accounts.transit(intent.currency),
            accounts.fees(intent.currency),
        ]

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        return [self.hold(intent, self._payer(intent), intent.amount_minor + intent.fee_pre_minor)]

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        hold = self.post_hold(intent, intent.amount_minor + intent.fee_pre_minor)
        return self.pay_out(intent, hold, self._payee(intent))

    @staticmethod
    def _payer(intent: Intent) -> NamedAccount:
        """The original recipient: a user (of a P2P_TRANSFER) or the merchant (of a charge); one of them."""
        assert (intent.sender_id is None) != (intent.merchant_id is None), intent.id
        if intent.merchant_id is not None:
            return accounts.merchant(intent.merchant_id, intent.currency)
        assert intent.sender_id is not None
        return accounts.user(intent.sender_id, intent.currency)

    @staticmethod
    def _payee(intent: Intent) -> NamedAccount:
        assert intent.recipient_id is not None, intent.id
        return accounts.user(intent.recipient_id, intent.currency)
