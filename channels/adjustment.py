"""ADJUSTMENT: opening balances and corrections (ADMIN_ADJUSTMENT), credited through the same pipeline.

authorize  adjustments -> transit   a   pending (the adjustments account has no limit)
settle     post the hold; transit -> user:recipient  a
"""

from __future__ import annotations

import tigerbeetle as tb

from channels.base import Channel, linked
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain.intent import Intent, OperationType


class Adjustment(Channel):
    name = "ADJUSTMENT"
    operation_types = frozenset({OperationType.ADMIN_ADJUSTMENT})

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        assert intent.recipient_id is not None
        return [
            accounts.adjustments(intent.currency),
            accounts.transit(intent.currency),
            accounts.user(intent.recipient_id, intent.currency),
        ]

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        return [self.hold(intent, accounts.adjustments(intent.currency), intent.amount_minor)]

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        assert intent.recipient_id is not None
        recipient = accounts.user(intent.recipient_id, intent.currency)
        return linked(
            [
                self.post_hold(intent, intent.amount_minor),
                self.leg(intent, "recipient", accounts.transit(intent.currency), recipient, intent.amount_minor),
            ]
        )
