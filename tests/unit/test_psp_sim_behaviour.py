"""Proves the PSP simulator's behaviour table (pm/dev/psp_sim_behaviour.py) row by row for both providers: the
status a query answers before and after the outcome, the callbacks planned (when, which status, how
many deliveries, which secret), and its request checks (pm/dev/psp_sim_requests.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pm.dev.psp_sim_behaviour import (
    LATE_AFTER_EXPIRY_S,
    Plan,
    PlannedCallback,
    Provider,
    Scenario,
    plan_for,
    scenario_of,
)
from pm.dev.psp_sim_requests import InvalidRequest, parse_payment_request, parse_payout

CREATED_S = 1_700_000_000.0
DELAY_S = 0.3
IPPS, QP = Provider.IPPS, Provider.QP


def ipps(amount_minor: int, hold_expires_at_s: float | None = None) -> Plan:
    return plan_for(IPPS, amount_minor, CREATED_S, DELAY_S, hold_expires_at_s=hold_expires_at_s)


def qp(amount_minor: int, expires_in_s: int = 600) -> Plan:
    return plan_for(QP, amount_minor, CREATED_S, DELAY_S, expires_in_s=expires_in_s)


@pytest.mark.parametrize(
    ("amount_minor", "scenario"),
    [(50000, Scenario.SUCCEED), (50009, Scenario.SUCCEED), (50010, Scenario.SUCCEED), (50099, Scenario.SUCCEED),
     (50013, Scenario.DECLINE), (113, Scenario.DECLINE), (21, Scenario.NO_CALLBACK),
     (50022, Scenario.DUPLICATE_CALLBACK), (50023, Scenario.STALE_CALLBACK), (50024, Scenario.AFTER_HOLD),
     (50025, Scenario.WRONG_SIGNATURE), (50026, Scenario.STATUS_UNAVAILABLE), (1326, Scenario.STATUS_UNAVAILABLE)],
)  # fmt: skip
def test_the_last_two_digits_pick_the_scenario(amount_minor: int, scenario: Scenario) -> None:
    assert scenario_of(amount_minor) is scenario


@pytest.mark.parametrize(("plan", "success"), [(ipps(50000), "SUCCEEDED"), (qp(50005), "PAID")])
def test_00_to_09_succeed_after_the_delay_with_one_callback(plan: Plan, success: str) -> None:
    initial = "PROCESSING" if success == "SUCCEEDED" else "PENDING"
    assert plan.status_at(CREATED_S) == initial
    assert plan.status_at(CREATED_S + DELAY_S - 0.001) == initial
    assert plan.status_at(CREATED_S + DELAY_S) == success
    at = CREATED_S + DELAY_S
    assert plan.callbacks == (PlannedCallback(send_at_s=at, status=success, occurred_at_s=at),)
    assert plan.status_failures == 0


def test_13_declines_a_payout_after_the_delay() -> None:
    plan = ipps(50013)
    at = CREATED_S + DELAY_S
    assert plan.status_at(at) == "DECLINED"
    assert plan.callbacks == (PlannedCallback(send_at_s=at, status="DECLINED", occurred_at_s=at),)


def test_13_lets_a_payment_request_expire_unpaid() -> None:
    plan = qp(50013, expires_in_s=120)
    assert plan.status_at(CREATED_S + 119.9) == "PENDING"
    assert plan.status_at(CREATED_S + 120) == "EXPIRED"
    at = CREATED_S + 120
    assert plan.callbacks == (PlannedCallback(send_at_s=at, status="EXPIRED", occurred_at_s=at),)


@pytest.mark.parametrize(("plan", "success"), [(ipps(50021), "SUCCEEDED"), (qp(50021), "PAID")])
def test_21_never_calls_back_but_the_status_tells_the_truth(plan: Plan, success: str) -> None:
    assert plan.callbacks == ()
    assert plan.status_at(CREATED_S + DELAY_S) == success
    assert plan.status_failures == 0


@pytest.mark.parametrize(("plan", "success"), [(ipps(50022), "SUCCEEDED"), (qp(50022), "PAID")])
def test_22_delivers_the_same_event_twice(plan: Plan, success: str) -> None:
    at = CREATED_S + DELAY_S
    assert plan.callbacks == (PlannedCallback(send_at_s=at, status=success, occurred_at_s=at, deliveries=2),)


@pytest.mark.parametrize(
    ("plan", "success", "stale"), [(ipps(50023), "SUCCEEDED", "PROCESSING"), (qp(50023), "PAID", "PENDING")]
)
def test_23_sends_a_stale_event_after_the_success(plan: Plan, success: str, stale: str) -> None:
    outcome, late = plan.callbacks
    assert (outcome.status, late.status) == (success, stale)
    assert late.send_at_s >= outcome.send_at_s  # sent after
    assert late.occurred_at_s < outcome.occurred_at_s  # but says it happened before
    assert plan.status_at(CREATED_S + DELAY_S) == success


def test_23_stale_event_is_earlier_even_without_a_delay() -> None:
    outcome, late = plan_for(IPPS, 23, CREATED_S, 0.0).callbacks
    assert late.occurred_at_s < outcome.occurred_at_s


def test_24_pays_out_five_seconds_after_the_hold_expired() -> None:
    hold_s = CREATED_S + 60
    late_s = hold_s + LATE_AFTER_EXPIRY_S
    assert LATE_AFTER_EXPIRY_S == 5.0
    plan = ipps(50024, hold_expires_at_s=hold_s)
    assert plan.status_at(late_s - 0.001) == "PROCESSING"
    assert plan.status_at(late_s) == "SUCCEEDED"
    assert plan.callbacks == (PlannedCallback(send_at_s=late_s, status="SUCCEEDED", occurred_at_s=late_s),)


def test_24_without_a_hold_pays_out_after_ten_delays() -> None:
    plan = ipps(50024)
    assert plan.status_at(CREATED_S + 9 * DELAY_S) == "PROCESSING"
    assert plan.final_at_s == pytest.approx(CREATED_S + 10 * DELAY_S)
    assert plan.status_at(CREATED_S + 10 * DELAY_S + 0.001) == "SUCCEEDED"


def test_24_pays_a_payment_request_five_seconds_after_it_expired() -> None:
    plan = qp(50024, expires_in_s=30)
    assert plan.status_at(CREATED_S + 34.5) == "PENDING"
    assert plan.status_at(CREATED_S + 35) == "PAID"
    assert [c.status for c in plan.callbacks] == ["PAID"]
    assert plan.callbacks[0].send_at_s == CREATED_S + 35


@pytest.mark.parametrize(("plan", "success"), [(ipps(50025), "SUCCEEDED"), (qp(50025), "PAID")])
def test_25_signs_the_callback_with_a_wrong_secret(plan: Plan, success: str) -> None:
    at = CREATED_S + DELAY_S
    assert plan.callbacks == (PlannedCallback(send_at_s=at, status=success, occurred_at_s=at, wrong_secret=True),)
    assert plan.status_at(at) == success


@pytest.mark.parametrize(("plan", "success"), [(ipps(50026), "SUCCEEDED"), (qp(50026), "PAID")])
def test_26_no_callback_and_two_failed_status_queries(plan: Plan, success: str) -> None:
    assert plan.callbacks == ()
    assert plan.status_failures == 2
    assert plan.status_at(CREATED_S + DELAY_S) == success


# -- request checks --------------------------------------------------------------------------------

PAYOUT: dict[str, Any] = {
    "reference": "wd_01:abc-2.x",
    "amount_minor": 50000,
    "currency": "THB",
    "destination_ref": "tok_123",
    "callback_url": "http://127.0.0.1:8080/psp/IPPS_TRANSFER/callback",
}
PAYMENT_REQUEST: dict[str, Any] = {
    "reference": "tu_1",
    "amount_minor": 100000,
    "currency": "THB",
    "callback_url": "https://pm.example/psp/QP_TRANSFER/callback",
    "expires_in_s": 900,
}


def test_a_valid_payout_and_payment_request_parse() -> None:
    payout = parse_payout({**PAYOUT, "hold_expires_at": 1_700_000_600, "extra": "ignored"})
    assert (payout.provider, payout.reference, payout.amount_minor, payout.destination_ref) == (
        IPPS,
        "wd_01:abc-2.x",
        50000,
        "tok_123",
    )
    assert payout.hold_expires_at_s == 1_700_000_600
    assert parse_payout(PAYOUT).hold_expires_at_s is None
    request = parse_payment_request(PAYMENT_REQUEST)
    assert (request.provider, request.expires_in_s, request.destination_ref) == (QP, 900, None)


@pytest.mark.parametrize(
    ("change", "code"),
    [({"reference": ""}, "invalid_reference"), ({"reference": "a" * 65}, "invalid_reference"),
     ({"reference": "a/b"}, "invalid_reference"), ({"reference": 12}, "invalid_reference"),
     ({"amount_minor": 0}, "invalid_amount_minor"), ({"amount_minor": -5}, "invalid_amount_minor"),
     ({"amount_minor": 1.5}, "invalid_amount_minor"), ({"amount_minor": "100"}, "invalid_amount_minor"),
     ({"amount_minor": True}, "invalid_amount_minor"), ({"amount_minor": 2**60}, "invalid_amount_minor"),
     ({"currency": "USD"}, "invalid_currency"), ({"currency": None}, "invalid_currency"),
     ({"callback_url": "ftp://x/cb"}, "invalid_callback_url"), ({"callback_url": "http://"}, "invalid_callback_url"),
     ({"callback_url": "http://h:x/"}, "invalid_callback_url"), ({"callback_url": None}, "invalid_callback_url"),
     ({"destination_ref": ""}, "invalid_destination_ref"), ({"destination_ref": 7}, "invalid_destination_ref"),
     ({"destination_ref": "t" * 129}, "invalid_destination_ref"),
     ({"hold_expires_at": "soon"}, "invalid_hold_expires_at"),
     ({"hold_expires_at": 1_700_000_000_000}, "invalid_hold_expires_at")],
)  # fmt: skip
def test_a_malformed_payout_is_refused_with_its_code(change: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_payout({**PAYOUT, **change})
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("change", "code"),
    [({"expires_in_s": 0}, "invalid_expires_in_s"), ({"expires_in_s": 86_401}, "invalid_expires_in_s"),
     ({"expires_in_s": None}, "invalid_expires_in_s"), ({"amount_minor": None}, "invalid_amount_minor")],
)  # fmt: skip
def test_a_malformed_payment_request_is_refused_with_its_code(change: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_payment_request({**PAYMENT_REQUEST, **change})
    assert raised.value.code == code


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_payout(body)
    assert raised.value.code == "invalid_body"


def test_a_missing_field_is_refused() -> None:
    without_destination = {key: value for key, value in PAYOUT.items() if key != "destination_ref"}
    with pytest.raises(InvalidRequest):
        parse_payout(without_destination)
