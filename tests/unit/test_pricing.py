"""Pricing follows the documented rules with either engine: the first applying rule per kind by priority,
integer fees (division truncates), min/max clamps, validity windows, operation type and channel matching,
the Bangkok hour, the rule's currency; a failing, broken or negative rule refuses with FEE_RULE_ERROR naming
it, a POST fee equal to or above the amount with FEE_EXCEEDS_AMOUNT; the one-program fast path agrees with
one-by-one; and the README's worked examples charge what it says."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.admin_fee_rules import FeeRuleBody
from pm.domain import pricing
from pm.domain.cel import DEFAULT_BOUNDS, ProductionEngine, ReferenceEngine
from pm.domain.intent import ErrorCode
from pm.domain.pricing import FeeKind, FeeRule, PricingError, PricingRequest, RuleSet

PRE, POST = FeeKind.PRE, FeeKind.POST
NOON_UTC = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # 19:00 in Bangkok
_ids = itertools.count(1)


@pytest.fixture(params=[ProductionEngine(), ReferenceEngine()], ids=lambda engine: engine.name)
def engine(request):
    return request.param


def rule(condition: str = "true", amount: str = "0", kind: FeeKind = PRE, priority: int = 100, **fields) -> FeeRule:
    return FeeRule(
        id=fields.pop("id", next(_ids)), version=fields.pop("version", 1), name="test",
        operation_type=fields.pop("operation_type", None), channel=fields.pop("channel", None),
        condition=condition, amount=amount, kind=kind, priority=priority,
        currency=fields.pop("currency", "THB"), **fields,
    )  # fmt: skip


def request(amount_minor: int = 10_000, **changes) -> PricingRequest:
    base = PricingRequest("P2P_TRANSFER", "INTERNAL_P2P", amount_minor, "THB", ("kyc_verified",), 1, 2, NOON_UTC)
    return dataclasses.replace(base, **changes)


def fees_of(engine, rules: list[FeeRule], req: PricingRequest) -> tuple[int, int, list[tuple[int, str, int]]]:
    fees = RuleSet(engine, rules).price(req)
    return fees.fee_pre_minor, fees.fee_post_minor, [(r.id, str(r.kind), r.fee_minor) for r in fees.rules]


def refusal_of(engine, rules: list[FeeRule], req: PricingRequest) -> PricingError:
    with pytest.raises(PricingError) as raised:
        RuleSet(engine, rules).price(req)
    return raised.value


def test_no_rule_no_fee(engine) -> None:
    assert fees_of(engine, [], request()) == (0, 0, [])
    assert fees_of(engine, [rule("false", "100")], request()) == (0, 0, [])


def test_first_applying_rule_per_kind_by_priority_prices_and_the_rest_are_not_consulted(engine) -> None:
    general = rule("true", "amount / 100", PRE, priority=100)
    vip = rule("'vip' in tags", "0", PRE, priority=10)
    older_tie = rule("true", "7", POST, priority=50, id=1_000)
    newer_tie = rule("true", "8", POST, priority=50, id=1_001)
    # A lower-priority rule that would fail is never evaluated once a better one applied.
    failing_later = rule("amount / 0 == 1", "1", PRE, priority=200)
    rules = [general, vip, newer_tie, older_tie, failing_later]
    assert fees_of(engine, rules, request(tags=("vip",))) == (0, 7, [(vip.id, "PRE", 0), (1_000, "POST", 7)])
    assert fees_of(engine, rules, request()) == (100, 7, [(general.id, "PRE", 100), (1_000, "POST", 7)])


def test_fees_are_integers_and_division_truncates(engine) -> None:
    truncated = rule("true", "amount * 15 / 1000")
    half_up = rule("true", "(amount * 15 + 500) / 1000", POST)
    assert fees_of(engine, [truncated, half_up], request(1_999))[:2] == (29, 30)
    assert fees_of(engine, [truncated, half_up], request(1_966))[:2] == (29, 29)


def test_min_and_max_clamp_the_fee(engine) -> None:
    clamped = rule("true", "amount / 100", min_fee_minor=500, max_fee_minor=10_000)
    assert fees_of(engine, [clamped], request(1_000))[0] == 500
    assert fees_of(engine, [clamped], request(200_000))[0] == 2_000
    assert fees_of(engine, [clamped], request(5_000_000))[0] == 10_000


def test_validity_window_is_from_inclusive_to_exclusive(engine) -> None:
    window = rule("true", "42", valid_from=NOON_UTC, valid_to=NOON_UTC + timedelta(hours=1))
    assert fees_of(engine, [window], request(at=NOON_UTC - timedelta(seconds=1)))[0] == 0
    assert fees_of(engine, [window], request(at=NOON_UTC))[0] == 42
    assert fees_of(engine, [window], request(at=NOON_UTC + timedelta(minutes=59)))[0] == 42
    assert fees_of(engine, [window], request(at=NOON_UTC + timedelta(hours=1)))[0] == 0


def test_operation_type_and_channel_match_or_any(engine) -> None:
    p2p = rule("true", "1", priority=1, operation_type="P2P_TRANSFER")
    qr = rule("true", "2", priority=0, operation_type="THAI_QR_PAY")
    internal = rule("true", "3", POST, priority=2, channel="INTERNAL_P2P")
    ipps = rule("true", "4", POST, priority=1, channel="IPPS_TRANSFER")
    assert fees_of(engine, [p2p, qr, internal, ipps], request())[:2] == (1, 3)
    assert fees_of(engine, [p2p, qr, internal, ipps], request(channel="IPPS_TRANSFER"))[:2] == (1, 4)


def test_a_rule_prices_only_intents_of_its_currency(engine) -> None:
    # "At least 5.00 THB" (500 satang) must not charge a USD intent 5.00 USD, nor any fee at all.
    thb = rule("true", "amount / 100", min_fee_minor=500, currency="THB")
    usd = rule("true", "7", POST, currency="USD")
    assert fees_of(engine, [thb], request(currency="USD")) == (0, 0, [])
    assert fees_of(engine, [thb, usd], request(currency="USD"))[:2] == (0, 7)
    assert fees_of(engine, [thb, usd], request())[:2] == (500, 0)
    # The cached candidates are per currency: THB first, then USD, then THB again on one rule set.
    rules = RuleSet(engine, [thb, usd])
    assert [rules.price(request(currency=c)).fee_pre_minor for c in ("THB", "USD", "THB")] == [500, 0, 500]
    # `pm rules test` (explain) lists only the rules of the intent's currency as candidates.
    assert [o.rule.id for o in rules.explain(request(currency="USD"))] == [usd.id]


def test_hour_is_the_local_hour_in_bangkok(engine) -> None:
    night = rule("hour >= 22 || hour < 6", "25", POST)
    assert fees_of(engine, [night], request(at=datetime(2026, 3, 1, 14, 59, tzinfo=UTC)))[1] == 0  # 21:59
    assert fees_of(engine, [night], request(at=datetime(2026, 3, 1, 15, 0, tzinfo=UTC)))[1] == 25  # 22:00
    assert fees_of(engine, [night], request(at=datetime(2026, 3, 1, 22, 59, tzinfo=UTC)))[1] == 25  # 05:59
    assert fees_of(engine, [night], request(at=datetime(2026, 3, 1, 23, 0, tzinfo=UTC)))[1] == 0  # 06:00


def test_an_evaluation_error_refuses_with_the_rule_id(engine) -> None:
    fine = rule("true", "5", PRE)
    broken = rule("amount / (amount - 10000) > 0", "1", POST, id=4242, version=3)
    error = refusal_of(engine, [fine, broken], request(10_000))
    assert error.code == ErrorCode.FEE_RULE_ERROR and error.rule_id == 4242
    assert "fee rule 4242 (version 3)" in error.message and "condition" in error.message
    amount_fails = rule("true", "amount / 0", id=4343)
    assert refusal_of(engine, [amount_fails], request()).rule_id == 4343


def test_a_negative_or_non_integer_fee_refuses(engine) -> None:
    negative = rule("true", "amount - 20000", id=77)
    error = refusal_of(engine, [negative], request(10_000))
    assert (error.code, error.rule_id) == (ErrorCode.FEE_RULE_ERROR, 77) and "negative fee: -10000" in error.message
    # Production refuses a double at compile time (the rule is kept, broken); reference at evaluation.
    double = rule("true", "double(amount) * 0.5", id=78)
    error = refusal_of(engine, [double], request())
    assert (error.code, error.rule_id) == (ErrorCode.FEE_RULE_ERROR, 78)


def test_a_post_fee_equal_to_or_above_the_amount_refuses(engine) -> None:
    post = rule("true", "1000", POST)
    assert refusal_of(engine, [post], request(999)).code == ErrorCode.FEE_EXCEEDS_AMOUNT
    # Equal too: the recipient would get nothing.
    assert refusal_of(engine, [post], request(1_000)).code == ErrorCode.FEE_EXCEEDS_AMOUNT
    assert fees_of(engine, [post], request(1_001))[1] == 1_000


def test_adjustments_are_never_priced(engine) -> None:
    assert fees_of(engine, [rule("true", "100")], request(operation_type="ADMIN_ADJUSTMENT")) == (0, 0, [])


def test_quote_shows_what_each_party_sees() -> None:
    fees = RuleSet(ProductionEngine(), [rule("true", "30", PRE), rule("true", "20", POST)]).price(request(1_000))
    quote = fees.quote(1_000)
    assert quote["sender_debit_minor"] == 1_030 and quote["recipient_credit_minor"] == 980
    assert [r["kind"] for r in quote["rules"]] == ["PRE", "POST"]


def test_the_one_program_fast_path_agrees_with_one_by_one(monkeypatch) -> None:
    rules = [
        rule("'vip' in tags", "0", PRE, priority=1),
        rule("amount > 60000", "7", PRE, priority=0, valid_from=NOON_UTC + timedelta(hours=2)),  # later only
        rule("amount >= 50000", "amount / 200", PRE, priority=2, max_fee_minor=400),
        rule("true", "amount / 100", PRE, priority=3, min_fee_minor=10),
        rule("hour >= 22 || hour < 6", "(amount * 15 + 500) / 1000", POST, priority=1),
        rule("amount / (amount - 77777) > 0", "3", POST, priority=2),  # fails at 77,777 only
        rule("amount > 90000", "amount - 100000", POST, priority=3),  # negative below 100,000
    ]
    cases = [
        request(amount, tags=tags, at=NOON_UTC + timedelta(hours=hours))
        for amount in (1, 999, 50_000, 77_777, 95_000, 150_000)
        for tags in ((), ("vip",))
        for hours in (0, 4)
    ]
    engine = ProductionEngine()
    fast = RuleSet(engine, rules)
    monkeypatch.setattr(pricing, "COMBINED_RULES_MAX", 0)
    slow = RuleSet(engine, rules)
    for case in cases:
        assert _outcome(fast, case) == _outcome(slow, case), case


def _outcome(rules: RuleSet, req: PricingRequest) -> object:
    try:
        return rules.price(req)
    except PricingError as exc:
        return (exc.code, exc.rule_id, exc.message)


def test_each_rule_is_compiled_once_and_reused_across_reloads() -> None:
    class CountingEngine(ProductionEngine):
        def __init__(self) -> None:
            super().__init__()
            self.compiled: list[str] = []

        def compile(self, expression, variables, result_type, bounds=DEFAULT_BOUNDS):
            self.compiled.append(expression)
            return super().compile(expression, variables, result_type, bounds)

    engine = CountingEngine()
    first = rule("amount > 1", "2", id=1)
    second = rule("amount > 3", "4", POST, id=2)
    rules = RuleSet(engine, [first, second])
    rules.price(request())
    rules.price(request(20_000))
    assert engine.compiled.count("amount > 1") == 1 and engine.compiled.count("amount > 3") == 1
    edited = dataclasses.replace(second, version=2, condition="amount > 5")
    RuleSet(engine, [first, edited], previous=rules)
    assert engine.compiled.count("amount > 1") == 1 and engine.compiled.count("amount > 5") == 1


def test_a_rule_that_no_longer_compiles_refuses_the_intents_it_would_price(engine) -> None:
    rules = RuleSet(engine, [rule("amount +", "1", id=99), rule("true", "5", POST, id=100)])
    error = refusal_of(engine, [rule("amount +", "1", id=99)], request())
    assert error.rule_id == 99 and "does not compile" in error.message
    outcomes = rules.explain(request())
    assert {o.rule.id: o.error is not None for o in outcomes} == {99: True, 100: False}


def test_the_readme_examples_charge_what_the_readme_says(engine) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Fee rules") : readme.index("## Tests")]
    bodies = re.findall(r"```json\n(.*?)```", section, re.S)[:3]
    rules = []
    for number, text in enumerate(bodies, 1):
        fields = FeeRuleBody.model_validate_json(json.dumps(json.loads(text))).fields()
        rules.append(FeeRule(id=number, version=1, **dataclasses.asdict(fields)))
    bangkok = ZoneInfo("Asia/Bangkok")

    def quote(amount_minor: int, tags: tuple[str, ...] = (), hour: int = 14, year: int = 2026) -> tuple[int, int]:
        at = datetime(year, 3, 1, hour, tzinfo=bangkok)
        fees = RuleSet(engine, rules).price(request(amount_minor, tags=tags, at=at))
        return fees.fee_pre_minor, fees.fee_post_minor

    assert quote(150_000) == (1_500, 0)  # example 1
    assert quote(10_000) == (500, 0) and quote(5_000_000) == (10_000, 0)  # its min and max
    assert quote(150_000, ("vip", "kyc_verified")) == (0, 0) and quote(150_000, ("vip",)) == (1_500, 0)  # 2
    assert quote(150_000, hour=23) == (1_500, 225) and quote(150_000, hour=23, year=2025) == (1_500, 0)  # 3
