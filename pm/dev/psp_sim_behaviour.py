"""What the PSP simulator does with a payout or a payment request, picked by the amount's last two digits.

Pure computation (no I/O, no clock): `plan_for` turns a request into a `Plan` (the status a query
answers over time, the callbacks to send and when); the simulator in pm/dev/psp_sim.py carries it out.

    amount_minor % 100   IPPS payout                          QP payment request (top-up)
    00-09, other         SUCCEEDED after the delay, callback  PAID after the delay, callback
    13                   DECLINED after the delay, callback   never paid: EXPIRED at expires_in_s, callback
    21                   SUCCEEDED after the delay, no callback (a status query tells the truth)
    22                   the success callback delivered twice (same event id, same body)
    23                   the success callback, then a stale PROCESSING / PENDING event (new event id,
                         occurred_at earlier than the success's)
    24                   SUCCEEDED at hold_expires_at + 5 s      PAID at expires_in_s + 5 s, callback
                         (no hold: after 10 x the delay), callback
    25                   the success callback signed with a wrong secret (a status query tells the truth)
    26                   no callback; the first two status queries of the reference answer 503
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pm.domain.psp import Provider as Provider  # the simulator plays both


class Scenario(IntEnum):
    """The amount's last two digits (minor units) that change the behaviour; every other value succeeds."""

    SUCCEED = 0
    DECLINE = 13
    NO_CALLBACK = 21
    DUPLICATE_CALLBACK = 22
    STALE_CALLBACK = 23
    AFTER_HOLD = 24
    WRONG_SIGNATURE = 25
    STATUS_UNAVAILABLE = 26


INITIAL_STATUS = {Provider.IPPS: "PROCESSING", Provider.QP: "PENDING"}
SUCCESS_STATUS = {Provider.IPPS: "SUCCEEDED", Provider.QP: "PAID"}
DECLINE_STATUS = {Provider.IPPS: "DECLINED", Provider.QP: "EXPIRED"}

# 24 without hold_expires_at: PM gave no hold deadline, so "late" is this many delays.
LATE_DELAYS_WITHOUT_HOLD = 10
# 24: the success arrives this long after the deadline PM gave (`hold_expires_at`, or the request's
# expiry), which is when PM gives up: long enough that PM has voided by then (its poller re-drives an
# intent every `stuck_after_s`), so the case is a PSP breaking its contract, never a race with the void.
LATE_AFTER_EXPIRY_S = 5.0
# 26: status queries that answer 503 before the truth, per reference.
STATUS_FAILURES_UNAVAILABLE = 2
# 23: how much earlier than the success the stale event says it occurred, at least.
STALE_EARLIER_S = 0.001


@dataclass(frozen=True)
class PlannedCallback:
    """One event: sent at `send_at_s`, `deliveries` times with the same event id and body."""

    send_at_s: float
    status: str
    occurred_at_s: float
    deliveries: int = 1
    wrong_secret: bool = False


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    initial_status: str
    final_status: str
    final_at_s: float
    callbacks: tuple[PlannedCallback, ...]
    status_failures: int = 0

    def status_at(self, now_s: float) -> str:
        return self.final_status if now_s >= self.final_at_s else self.initial_status


def scenario_of(amount_minor: int) -> Scenario:
    try:
        return Scenario(amount_minor % 100)
    except ValueError:
        return Scenario.SUCCEED


def _final(
    provider: Provider,
    scenario: Scenario,
    created_at_s: float,
    delay_s: float,
    hold_expires_at_s: float | None,
    expires_in_s: float | None,
) -> tuple[str, float]:
    """(the final status, when it becomes true)."""
    if scenario is Scenario.DECLINE:
        if provider is Provider.QP:
            assert expires_in_s is not None, "a QP payment request always has expires_in_s"
            return DECLINE_STATUS[provider], created_at_s + expires_in_s
        return DECLINE_STATUS[provider], created_at_s + delay_s
    if scenario is Scenario.AFTER_HOLD:
        if provider is Provider.QP:
            assert expires_in_s is not None, "a QP payment request always has expires_in_s"
            return SUCCESS_STATUS[provider], created_at_s + expires_in_s + LATE_AFTER_EXPIRY_S
        if hold_expires_at_s is not None:
            return SUCCESS_STATUS[provider], max(created_at_s + delay_s, hold_expires_at_s + LATE_AFTER_EXPIRY_S)
        return SUCCESS_STATUS[provider], created_at_s + LATE_DELAYS_WITHOUT_HOLD * delay_s
    return SUCCESS_STATUS[provider], created_at_s + delay_s


def plan_for(
    provider: Provider,
    amount_minor: int,
    created_at_s: float,
    delay_s: float,
    *,
    hold_expires_at_s: float | None = None,
    expires_in_s: float | None = None,
) -> Plan:
    assert amount_minor > 0 and delay_s >= 0
    scenario = scenario_of(amount_minor)
    final_status, final_at_s = _final(provider, scenario, created_at_s, delay_s, hold_expires_at_s, expires_in_s)
    outcome = PlannedCallback(send_at_s=final_at_s, status=final_status, occurred_at_s=final_at_s)
    callbacks: tuple[PlannedCallback, ...] = (outcome,)
    status_failures = 0
    if scenario in (Scenario.NO_CALLBACK, Scenario.STATUS_UNAVAILABLE):
        callbacks = ()
        status_failures = STATUS_FAILURES_UNAVAILABLE if scenario is Scenario.STATUS_UNAVAILABLE else 0
    elif scenario is Scenario.DUPLICATE_CALLBACK:
        callbacks = (
            PlannedCallback(send_at_s=final_at_s, status=final_status, occurred_at_s=final_at_s, deliveries=2),
        )
    elif scenario is Scenario.STALE_CALLBACK:
        stale_occurred_at_s = min(created_at_s, final_at_s - STALE_EARLIER_S)
        stale = PlannedCallback(
            send_at_s=final_at_s, status=INITIAL_STATUS[provider], occurred_at_s=stale_occurred_at_s
        )
        callbacks = (outcome, stale)
    elif scenario is Scenario.WRONG_SIGNATURE:
        callbacks = (
            PlannedCallback(send_at_s=final_at_s, status=final_status, occurred_at_s=final_at_s, wrong_secret=True),
        )
    return Plan(
        scenario=scenario,
        initial_status=INITIAL_STATUS[provider],
        final_status=final_status,
        final_at_s=final_at_s,
        callbacks=callbacks,
        status_failures=status_failures,
    )
