"""Proves the limit arithmetic without I/O: calendar days and months start at midnight in Asia/Bangkok
(UTC+7, checked at the boundaries), rules match by currency, operation type and tag (or any), only senders
are limited, and a counter is named by user, currency, rule, version and period."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pm.domain.intent import Intent, OperationType, State
from pm.domain.limits import WALLET_TIME_ZONE, LimitRule, Period, counters_for, exceeded_message, period_window


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def rule(
    rule_id: int = 1,
    operation_type: str | None = None,
    tag: str | None = None,
    period: Period = Period.DAILY,
    max_count: int | None = None,
    version: int = 1,
    currency: str = "THB",
) -> LimitRule:
    return LimitRule(rule_id, version, operation_type, tag, period, 10_000, max_count, currency=currency)


def intent(
    operation_type: OperationType = OperationType.P2P_TRANSFER,
    tags: tuple[str, ...] = (),
    sender_id: int | None = 7,
    created_at: datetime | None = None,
    currency: str = "THB",
) -> Intent:
    return Intent(
        id=uuid.uuid4(),
        state=State.PRICED,
        version=3,
        operation_type=operation_type,
        amount_minor=100,
        currency=currency,
        sender_id=sender_id,
        recipient_id=8,
        tags=tags,
        created_at=created_at or utc(2024, 5, 10, 3, 0),
    )


# -- periods ---------------------------------------------------------------------------------------


def test_a_day_is_bangkok_midnight_to_midnight_seven_hours_before_utc() -> None:
    last_second = period_window(Period.DAILY, utc(2024, 3, 10, 16, 59, 59))  # 23:59:59 in Bangkok
    first_second = period_window(Period.DAILY, utc(2024, 3, 10, 17, 0, 0))  # 00:00:00 the next day
    assert last_second.label == "20240310" and first_second.label == "20240311"
    assert last_second.starts_at == utc(2024, 3, 9, 17) and last_second.ends_at == utc(2024, 3, 10, 17)
    assert first_second.starts_at == last_second.ends_at
    local_start = first_second.starts_at.astimezone(WALLET_TIME_ZONE)
    assert local_start.utcoffset() == timedelta(hours=7)
    assert (local_start.hour, local_start.minute, local_start.second) == (0, 0, 0)


def test_a_utc_date_is_not_the_bangkok_date() -> None:
    # 20:00 UTC on the 10th is already 03:00 on the 11th in Bangkok.
    window = period_window(Period.DAILY, utc(2024, 3, 10, 20, 0))
    assert window.label == "20240311"


@pytest.mark.parametrize(
    ("at", "label", "starts_at", "ends_at"),
    [
        # 00:00 on 1 February in Bangkok is 17:00 on 31 January in UTC; February 2024 has 29 days.
        (utc(2024, 1, 31, 17, 0), "20240201", utc(2024, 1, 31, 17), utc(2024, 2, 29, 17)),
        (utc(2024, 1, 31, 16, 59, 59), "20240101", utc(2023, 12, 31, 17), utc(2024, 1, 31, 17)),
        # December rolls over into the next year.
        (utc(2024, 12, 15, 0, 0), "20241201", utc(2024, 11, 30, 17), utc(2024, 12, 31, 17)),
        (utc(2024, 12, 31, 17, 0), "20250101", utc(2024, 12, 31, 17), utc(2025, 1, 31, 17)),
    ],
)
def test_a_month_starts_at_midnight_on_the_first_in_bangkok(
    at: datetime, label: str, starts_at: datetime, ends_at: datetime
) -> None:
    window = period_window(Period.MONTHLY, at)
    assert (window.label, window.starts_at, window.ends_at) == (label, starts_at, ends_at)
    assert window.starts_at.astimezone(WALLET_TIME_ZONE).utcoffset() == timedelta(hours=7)


def test_a_naive_datetime_is_a_programmer_error() -> None:
    with pytest.raises(AssertionError):
        period_window(Period.DAILY, datetime(2024, 1, 1))


# -- matching --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation_type", "tag", "matches"),
    [
        (None, None, True),
        ("P2P_TRANSFER", None, True),
        ("THAI_QR_PAY", None, False),
        (None, "kyc_verified", True),
        (None, "vip", False),
        ("P2P_TRANSFER", "kyc_verified", True),
        ("P2P_TRANSFER", "vip", False),
    ],
)
def test_a_rule_matches_by_operation_type_and_tag_or_any(
    operation_type: str | None, tag: str | None, matches: bool
) -> None:
    payment = intent(tags=("kyc_verified", "risk:low"))
    assert rule(operation_type=operation_type, tag=tag).applies_to(payment) is matches
    assert len(counters_for(payment, (rule(operation_type=operation_type, tag=tag),))) == int(matches)


def test_a_rule_counts_only_intents_in_its_currency() -> None:
    thb_cap, usd_cap = rule(1, currency="THB"), rule(2, currency="USD")
    dollars, baht = intent(currency="USD"), intent(currency="THB")
    assert (usd_cap.applies_to(dollars), usd_cap.applies_to(baht)) == (True, False)
    assert (thb_cap.applies_to(baht), thb_cap.applies_to(dollars)) == (True, False)
    [dollar_counter] = counters_for(dollars, (thb_cap, usd_cap))
    [baht_counter] = counters_for(baht, (thb_cap, usd_cap))
    assert (dollar_counter.rule, dollar_counter.currency) == (usd_cap, "USD")
    assert dollar_counter.key == "pm:limit:counter:{7}:USD:2:1:20240510"
    assert baht_counter.key == "pm:limit:counter:{7}:THB:1:1:20240510"
    # A currency no rule names is not limited at all.
    assert counters_for(intent(currency="EUR"), (thb_cap, usd_cap)) == []


def test_a_rule_names_a_ledger_currency() -> None:
    with pytest.raises(TypeError, match="currency"):
        LimitRule(1, 1, None, None, Period.DAILY, 10_000, None)  # type: ignore[call-arg]
    with pytest.raises(AssertionError):
        rule(currency="JPY")


def test_only_a_sender_is_limited_and_never_an_adjustment() -> None:
    rules = (rule(),)
    assert counters_for(intent(sender_id=None), rules) == []
    assert counters_for(intent(OperationType.ADMIN_ADJUSTMENT, sender_id=7), rules) == []
    assert len(counters_for(intent(), rules)) == 1


def test_each_applicable_rule_is_one_counter_named_by_user_currency_rule_version_and_period() -> None:
    rules = (rule(1), rule(2, tag="vip"), rule(3, period=Period.MONTHLY, version=4), rule(4, currency="USD"))
    counters = counters_for(intent(created_at=utc(2024, 5, 10, 20, 0)), rules)
    assert [counter.key for counter in counters] == [
        "pm:limit:counter:{7}:THB:1:1:20240511",
        "pm:limit:counter:{7}:THB:3:4:20240501",
    ]
    # A counter outlives its period by the margin, so late releases still find it.
    assert counters[0].expire_at_s > int(counters[0].window.ends_at.timestamp())


def test_the_refusal_says_which_limit_and_what_remains() -> None:
    payment = intent(tags=("kyc_verified",))
    [counter] = counters_for(payment, (rule(5, "P2P_TRANSFER", "kyc_verified", max_count=3),))
    message = exceeded_message(counter, 2_500, 1)
    assert "daily THB limit (rule 5 v1: P2P_TRANSFER, tag kyc_verified)" in message
    assert "2500 of 10000 minor units and 1 of 3 intents remain" in message
    assert "2024-05-10T00:00:00+07:00" in message
    # The reserve script answers 0 for a counter rebuilt above its cap; a negative is a bug, never "none".
    with pytest.raises(AssertionError):
        exceeded_message(counter, 2_500, -1)
    with pytest.raises(AssertionError):
        exceeded_message(counter, 2_500, None)
    with pytest.raises(AssertionError):
        exceeded_message(counter, -40, 0)


def test_the_refusal_of_a_rule_without_a_count_cap_names_no_count() -> None:
    payment = intent()
    [counter] = counters_for(payment, (rule(6, "P2P_TRANSFER"),))
    message = exceeded_message(counter, 0, None)
    assert "0 of 10000 minor units remain" in message and "intents" not in message
    with pytest.raises(AssertionError):
        exceeded_message(counter, 0, 0)
