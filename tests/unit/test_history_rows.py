"""What each user sees of a final intent: settled transfers show both sides with their fees; a refused
intent shows only to the user who asked for it; mini-app rows carry the merchant."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from pm.domain.history import history_rows
from pm.domain.intent import Intent, OperationType, State


def final(state: State, operation_type: OperationType, sender: int | None, recipient: int | None, **more) -> Intent:
    return Intent(
        id=uuid.uuid4(), state=state, version=6, operation_type=operation_type, amount_minor=10_000, currency="THB",
        sender_id=sender, recipient_id=recipient, fee_pre_minor=150, fee_post_minor=40,
        error_code=None if state == State.SETTLED else "PSP_DECLINED",
        created_at=datetime(2026, 11, 26, tzinfo=UTC), updated_at=datetime(2026, 11, 26, 0, 1, tzinfo=UTC), **more,
    )  # fmt: skip


def shown(intent: Intent) -> list[tuple[int, str, int | None, int, int]]:
    return [(r.user_id, r.direction, r.counterparty_id, r.amount_minor, r.fee_minor) for r in history_rows(intent)]


def test_a_settled_transfer_shows_the_sender_debit_with_pre_fee_and_the_recipient_credit_net_of_post_fee() -> None:
    intent = final(State.SETTLED, OperationType.P2P_TRANSFER, 1001, 1002)
    assert shown(intent) == [(1001, "DEBIT", 1002, 10_150, 150), (1002, "CREDIT", 1001, 9_960, 40)]


def test_a_settled_top_up_and_withdrawal_show_only_the_wallet_user() -> None:
    assert shown(final(State.SETTLED, OperationType.QP_TOPUP, None, 1001)) == [(1001, "CREDIT", None, 9_960, 40)]
    assert shown(final(State.SETTLED, OperationType.IPPS_WITHDRAWAL, 1001, None)) == [
        (1001, "DEBIT", None, 10_150, 150)
    ]


@pytest.mark.parametrize("state", [State.REJECTED, State.FAILED])
def test_a_refused_intent_shows_amount_zero_to_the_user_who_asked(state: State) -> None:
    assert shown(final(state, OperationType.P2P_TRANSFER, 1001, 1002)) == [(1001, "DEBIT", 1002, 0, 0)]
    assert shown(final(state, OperationType.IPPS_WITHDRAWAL, 1001, None)) == [(1001, "DEBIT", None, 0, 0)]
    # The user topping up asked for it (X-User-Id is the recipient): a failed top-up is in their history.
    assert shown(final(state, OperationType.QP_TOPUP, None, 1001)) == [(1001, "CREDIT", None, 0, 0)]
    # A merchant's credit or an operator's adjustment that failed is not the user's news.
    assert shown(final(state, OperationType.MINIAPP_CREDIT, None, 1001, merchant_id=7)) == []
    assert shown(final(state, OperationType.ADMIN_ADJUSTMENT, None, 1001)) == []


def test_mini_app_rows_carry_their_merchant() -> None:
    (row,) = history_rows(final(State.SETTLED, OperationType.MINIAPP_CHARGE, 1001, None, merchant_id=7))
    assert (row.user_id, row.direction, row.intent.merchant_id) == (1001, "DEBIT", 7)


def test_only_final_intents_have_history() -> None:
    settled = final(State.SETTLED, OperationType.P2P_TRANSFER, 1001, 1002)
    with pytest.raises(AssertionError):
        history_rows(dataclasses.replace(settled, state=State.AUTHORIZED))
