"""INTERNAL_P2P: wallet to wallet, settled right after authorization (DESIGN.md §4).

authorize  user:sender -> transit   a + f   pending, with a timeout
settle     post the hold (a + f); transit -> user:recipient  a - g; transit -> fees  f + g
"""

from __future__ import annotations

import tigerbeetle as tb

from channels.base import Channel
from ledger import accounts
from ledger.accounts import NamedAccount
from pm.domain.intent import Intent, OperationType


class InternalP2P(Channel):
    name = "INTERNAL_P2P"
    operation_types = frozenset({OperationType.P2P_TRANSFER})

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        assert intent.sender_id is not None and intent.recipient_id is not None
        return [
            accounts.user(intent.sender_id, intent.currency),
            accounts.user(intent.recipient_id, intent.currency),
            accounts.transit(intent.currency),
            accounts.fees(intent.currency),
        ]

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        assert intent.sender_id is not None
        sender = accounts.user(intent.sender_id, intent.currency)
        return [self.hold(intent, sender, intent.amount_minor + intent.fee_pre_minor)]

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        assert intent.recipient_id is not None
        hold = self.post_hold(intent, intent.amount_minor + intent.fee_pre_minor)
        return self.pay_out(intent, hold, accounts.user(intent.recipient_id, intent.currency))
