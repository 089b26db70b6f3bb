"""MINIAPP: a mini-app's merchant and a wallet user, settled right after authorization (DESIGN.md §3, §4).

The caller is the mini-app backend; its key is bound to one merchant (`pm keys create --merchant-id`), and
the gateway takes `merchant_id` from that key, never from the body. The user is the signed X-User-Id.

MINIAPP_CHARGE (user pays the merchant; the user is the intent's sender):
    authorize  user:sender -> transit   a + f   pending, with a timeout
    settle     post the hold (a + f); transit -> merchant  a - g; transit -> fees  f + g
MINIAPP_CREDIT (the merchant pays the user; the user is the intent's recipient):
    authorize  merchant -> transit      a + f   pending, with a timeout
    settle     post the hold (a + f); transit -> user:recipient  a - g; transit -> fees  f + g

Merchant accounts carry `debits_must_not_exceed_credits` like user accounts: a credit beyond the
merchant's balance is refused at the hold (`exceeds_credits`), which dispatch maps to REJECTED
INSUFFICIENT_FUNDS with nothing held, whoever pays.
"""

from __future__ import annotations

import tigerbeetle as tb

from channels.base import Channel
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain.intent import Intent, OperationType

CHARGE = OperationType.MINIAPP_CHARGE
CREDIT = OperationType.MINIAPP_CREDIT


class MiniApp(Channel):
    name = "MINIAPP"
    operation_types = frozenset({CHARGE, CREDIT})

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        return [
            self._user(intent),
            self._merchant(intent),
            accounts.transit(intent.currency),
            accounts.fees(intent.currency),
        ]

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        payer = self._user(intent) if intent.operation_type == CHARGE else self._merchant(intent)
        return [self.hold(intent, payer, intent.amount_minor + intent.fee_pre_minor)]

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        payee = self._merchant(intent) if intent.operation_type == CHARGE else self._user(intent)
        return self.pay_out(intent, self.post_hold(intent, intent.amount_minor + intent.fee_pre_minor), payee)

    @staticmethod
    def _user(intent: Intent) -> NamedAccount:
        """The wallet user: the sender of a charge, the recipient of a credit (refusal checked it)."""
        user_id = intent.sender_id if intent.operation_type == CHARGE else intent.recipient_id
        assert intent.operation_type in (CHARGE, CREDIT) and user_id is not None, intent.id
        return accounts.user(user_id, intent.currency)

    @staticmethod
    def _merchant(intent: Intent) -> NamedAccount:
        assert intent.merchant_id is not None, intent.id
        return accounts.merchant(intent.merchant_id, intent.currency)
