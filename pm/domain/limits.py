"""Limits, without I/O: which caps apply to an intent, which calendar period it falls in, and the
counter each cap is kept in (DESIGN.md §6).

A limit rule caps the sum of `amount_minor` (and, optionally, the number) of one user's intents in one
currency, of an operation type (or any), that carry a tag (or any), per calendar day or month in the
wallet's time zone (Asia/Bangkok). The cap is in that currency's minor units: a USD cent never counts
against a THB cap, and an intent in a currency no rule names is not limited. The user is the sender:
limits cap money leaving a wallet. Intents without one (top-ups, mini-app credits, adjustments) and
`ADMIN_ADJUSTMENT` are never limited; a mini-app charge counts against the paying user (its sender),
never against the merchant, which is not a user. An intent falls in the period of its `created_at`, so
every redelivery and every rebuild puts it in the same counter, whenever it is checked.

    counters = counters_for(intent, rules)   # one Counter per applicable rule (of the intent's currency)
    counters[0].key                          # pm:limit:counter:{user}:{currency}:{rule}:{version}:{YYYYMMDD}

The counter key carries the rule's version: an edited rule (a new cap, another tag) starts fresh
counters, rebuilt from PostgreSQL under the new definition, so no count made under the old one leaks in.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pm.domain.intent import Intent, OperationType
from pm.domain.money import AMOUNT_MINOR_EXACT_MAX, CURRENCIES

# The counters' Redis keys and lifetimes (pm/redis/limit_counters.py). Every limit key starts with
# LIMIT_KEY_PREFIX, so an operator can drop the limit cache alone (`SCAN MATCH pm:limit:*`) without touching
# the streams.
LIMIT_KEY_PREFIX = "pm:limit:"
# A hash per (user, currency, rule id, rule version, period start): `_amount`, `_count`, and one field per
# intent that holds a place in it (the intent id -> its amount), which makes a reservation idempotent.
LIMIT_COUNTER_KEY_PREFIX = LIMIT_KEY_PREFIX + "counter:"
# Written when an intent's places are given back (it ended REJECTED or FAILED): a late redelivery of its
# limits entry must not take a place again, and a rebuild must not count it.
LIMIT_RELEASED_KEY_PREFIX = LIMIT_KEY_PREFIX + "released:"
# A counter outlives its period by a day: intents created just before midnight are checked after it, and
# refused ones are released after it (a PSP may take hours to decline); a day costs little memory.
LIMIT_COUNTER_EXPIRY_MARGIN_S = 24 * 3600

WALLET_TIME_ZONE = ZoneInfo("Asia/Bangkok")
# Operator corrections are not a user's spending.
EXEMPT_OPERATIONS = frozenset({OperationType.ADMIN_ADJUSTMENT})


class Period(enum.StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class LimitRule:
    id: int
    version: int
    operation_type: str | None  # None: any
    tag: str | None  # None: any
    period: Period
    max_amount_minor: int
    max_count: int | None  # None: no cap on the number of intents
    # The ISO 4217 code of the intents it counts; max_amount_minor is in its minor units. Keyword-only and
    # without a default: a cap means nothing without its currency.
    currency: str = field(kw_only=True)

    def __post_init__(self) -> None:
        assert self.id > 0 and self.version >= 1
        assert self.currency in CURRENCIES, self.currency
        assert 0 <= self.max_amount_minor <= AMOUNT_MINOR_EXACT_MAX, self.max_amount_minor
        assert self.max_count is None or self.max_count >= 0

    def applies_to(self, intent: Intent) -> bool:
        """Whether the rule counts this intent (the caller has checked it is limited at all)."""
        if self.currency != intent.currency:
            return False
        if self.operation_type is not None and self.operation_type != intent.operation_type:
            return False
        return self.tag is None or self.tag in intent.tags

    def describe(self) -> str:
        what = self.operation_type or "any operation"
        tag = f"tag {self.tag}" if self.tag else "any tag"
        return f"{self.period} {self.currency} limit (rule {self.id} v{self.version}: {what}, {tag})"


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One calendar day or month in the wallet's time zone, as UTC instants [starts_at, ends_at)."""

    starts_at: datetime
    ends_at: datetime
    label: str  # the local date it starts on, YYYYMMDD

    def __post_init__(self) -> None:
        assert self.starts_at.tzinfo is not None and self.starts_at < self.ends_at


def period_window(period: Period, at: datetime) -> PeriodWindow:
    """The day or month, in Asia/Bangkok, that holds the instant `at` (an aware datetime)."""
    assert at.tzinfo is not None, "a naive datetime has no place in a time zone"
    local_day = at.astimezone(WALLET_TIME_ZONE).date()
    if period == Period.DAILY:
        first, after = local_day, local_day + timedelta(days=1)
    else:
        first = local_day.replace(day=1)
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    window = PeriodWindow(_local_midnight_utc(first), _local_midnight_utc(after), first.strftime("%Y%m%d"))
    assert window.starts_at <= at < window.ends_at
    return window


def _local_midnight_utc(day: date) -> datetime:
    # Combining the date with midnight in the zone (not adding hours to an instant) stays right even in
    # a zone with daylight saving time; Bangkok has none.
    return datetime.combine(day, time(0), tzinfo=WALLET_TIME_ZONE).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Counter:
    """One cap on one user in one currency and period: what the reserve script checks and a rebuild
    recounts (the user's intents in the rule's currency only)."""

    rule: LimitRule
    user_id: int
    window: PeriodWindow

    @property
    def currency(self) -> str:
        return self.rule.currency

    @property
    def key(self) -> str:
        # The currency is in the key although the rule names it: a key says what it counts on its own, and
        # no counter kept before currencies were part of the rules (…:{user}:{rule}:…) is ever read again.
        # The user in braces is the key's hash tag: on a Redis Cluster, all of one user's counters and
        # released markers share a slot, so one script call can check and take them together.
        return (
            f"{LIMIT_COUNTER_KEY_PREFIX}{{{self.user_id}}}:{self.currency}:{self.rule.id}:{self.rule.version}"
            f":{self.window.label}"
        )

    @property
    def expire_at_s(self) -> int:
        return int(self.window.ends_at.timestamp()) + LIMIT_COUNTER_EXPIRY_MARGIN_S


def is_limited(intent: Intent) -> bool:
    return intent.sender_id is not None and intent.operation_type not in EXEMPT_OPERATIONS


def counters_for(intent: Intent, rules: tuple[LimitRule, ...]) -> list[Counter]:
    """The counters an intent takes a place in: one per enabled rule of its currency that applies to it.
    The same for the reservation, the give-back of a refused intent and the rebuild: each derives them
    from the intent (its currency among its fields), never from anything else."""
    if not is_limited(intent):
        return []
    assert intent.sender_id is not None and intent.created_at is not None, intent.id
    assert intent.amount_minor <= AMOUNT_MINOR_EXACT_MAX, intent.amount_minor
    return [
        Counter(rule, intent.sender_id, period_window(rule.period, intent.created_at))
        for rule in rules
        if rule.applies_to(intent)
    ]


def counter_keys_match(user_id: int) -> str:
    """A SCAN MATCH pattern for every counter of one user (an operator's or a test's look)."""
    return f"{LIMIT_COUNTER_KEY_PREFIX}{{{user_id}}}:*"


def released_key(intent: Intent) -> str:
    """The marker that the intent's places were given back; tagged with its sender, as its counters are."""
    assert intent.sender_id is not None, intent.id
    return f"{LIMIT_RELEASED_KEY_PREFIX}{{{intent.sender_id}}}:{intent.id}"


def exceeded_message(counter: Counter, remaining_amount_minor: int, remaining_count: int | None) -> str:
    """What LIMIT_EXCEEDED says: which limit, and what is left of it in this period."""
    rule = counter.rule
    # The reserve script never answers below zero, even for a counter rebuilt above its cap.
    assert remaining_amount_minor >= 0, remaining_amount_minor
    remaining = f"{remaining_amount_minor} of {rule.max_amount_minor} minor units"
    if rule.max_count is not None:
        assert remaining_count is not None and remaining_count >= 0, remaining_count
        remaining += f" and {remaining_count} of {rule.max_count} intents"
    else:
        assert remaining_count is None, remaining_count
    return (
        f"{rule.describe()} exceeded: {remaining} remain in the period from "
        f"{counter.window.starts_at.astimezone(WALLET_TIME_ZONE).isoformat()}"
    )


@dataclass(frozen=True, slots=True)
class Member:
    """An intent a rebuild counts: firm if it passed the limits stage, provisional while PRICED."""

    intent_id: uuid.UUID
    amount_minor: int
    firm: bool
