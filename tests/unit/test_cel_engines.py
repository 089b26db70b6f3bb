"""Both CEL engines give identical results for every example rule (so our rules stay standard CEL), the
production engine refuses type errors at compile time, and both refuse expressions beyond the bounds,
including every shape whose cost is not bounded by the expression's length and the lists it iterates."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pm.domain.cel import Bounds, CelCompileError, CelEvaluationError, ProductionEngine, ReferenceEngine
from pm.domain.cel.base import code_only
from pm.domain.pricing import FEE_VARIABLES, check_expressions

ENGINES = [ProductionEngine(), ReferenceEngine()]
BASE = {
    "amount": 150_000,
    "currency": "THB",
    "operation_type": "P2P_TRANSFER",
    "channel": "INTERNAL_P2P",
    "tags": ["vip", "kyc_verified"],
    "sender_id": 1001,
    "recipient_id": 1002,
    "hour": 14,
}
ERROR = object()  # the expected result "evaluation fails"

# (expression, result type, changes to BASE, expected result): every rule in the README and then some.
EXAMPLES: list[tuple[str, str, dict[str, Any], object]] = [
    # README example 1: 1% PRE fee on P2P, at least 5.00, at most 100.00 (min/max are the rule's fields).
    ("true", "bool", {}, True),
    ("amount / 100", "int", {}, 1_500),
    ("amount / 100", "int", {"amount": 1_999}, 19),  # integer division truncates
    # README example 2: verified VIPs pay no PRE fee at all.
    ("'vip' in tags && 'kyc_verified' in tags", "bool", {}, True),
    ("'vip' in tags && 'kyc_verified' in tags", "bool", {"tags": ["vip"]}, False),
    ("0", "int", {}, 0),
    # README example 3: a POST fee of 0.15% rounded half up, for large night-time transfers.
    ("amount >= 100000 && (hour >= 22 || hour < 6)", "bool", {"hour": 23}, True),
    ("amount >= 100000 && (hour >= 22 || hour < 6)", "bool", {}, False),
    ("(amount * 15 + 5000) / 10000", "int", {}, 225),
    ("(amount * 15 + 5000) / 10000", "int", {"amount": 1_999}, 3),
    # More of the language a fee rule may use.
    ("amount * 15 / 1000", "int", {"amount": 1_999}, 29),
    ("amount >= 1000 ? 25 : 10", "int", {"amount": 999}, 10),
    ("currency == 'THB' && channel == 'INTERNAL_P2P'", "bool", {}, True),
    ("operation_type in ['P2P_TRANSFER', 'THAI_QR_PAY']", "bool", {}, True),
    ("tags.exists(t, t.startsWith('risk:'))", "bool", {"tags": ["risk:high"]}, True),
    ("tags.all(t, t != 'blocked') && size(tags) <= 5", "bool", {}, True),
    ("size(tags.filter(t, t.endsWith('_verified'))) * 100", "int", {}, 100),
    ("tags.exists_one(t, t == 'vip')", "bool", {}, True),
    ("sender_id % 2 == 0", "bool", {"sender_id": 1_002}, True),
    ("recipient_id == 0", "bool", {"recipient_id": 0}, True),
    ("'a' + currency == 'aTHB'", "bool", {}, True),
    ("currency.matches('^[A-Z]{3}$')", "bool", {}, True),
    ("int(double(amount) * 0.015)", "int", {"amount": 1_999}, 29),
    ("-amount / 7", "int", {"amount": 10}, -1),  # toward zero, not floor
    ("amount % 7", "int", {"amount": 10}, 3),
    ("amount > 5 || amount / 0 == 1", "bool", {}, True),  # CEL's || absorbs an error
    ("amount / (amount - 150000)", "int", {}, ERROR),  # division by zero
    ("amount * 9223372036854775807", "int", {}, ERROR),  # overflow
    ("tags[5] == 'x'", "bool", {}, ERROR),  # index out of range
]


@pytest.mark.parametrize(("expression", "result_type", "changes", "expected"), EXAMPLES)
def test_both_engines_agree_on_every_example(expression, result_type, changes, expected) -> None:
    activation = {**BASE, **changes}
    results = []
    for engine in ENGINES:
        program = engine.compile(expression, FEE_VARIABLES, result_type)
        try:
            results.append(program.evaluate(activation))
        except CelEvaluationError:
            results.append(ERROR)
    assert results == [expected, expected], dict(zip([e.name for e in ENGINES], results, strict=True))
    assert all(type(result) is type(expected) for result in results if result is not ERROR)


@pytest.mark.parametrize(
    ("expression", "result_type", "message"),
    [
        ("amount + 'x'", "int", "no matching overload"),
        ("'vip' in amount", "bool", "no matching overload"),
        ("nosuch > 1", "bool", "undeclared reference to 'nosuch'"),
        ("amount * 2", "bool", "it must give bool"),
        ("double(amount) * 0.015", "int", "gives double; it must give int"),
        ("1u", "int", "gives uint"),
        ("dyn(amount)", "int", "gives dyn"),
        ("amount +", "int", "Syntax error"),
    ],
)
def test_production_engine_refuses_type_errors_at_compile_time(expression, result_type, message) -> None:
    with pytest.raises(CelCompileError, match=message.replace("(", r"\(")):
        ProductionEngine().compile(expression, FEE_VARIABLES, result_type)


def test_reference_engine_checks_the_result_type_at_evaluation() -> None:
    program = ReferenceEngine().compile("double(amount) * 0.5", FEE_VARIABLES, "int")
    with pytest.raises(CelEvaluationError, match="not of type int"):
        program.evaluate(BASE)
    with pytest.raises(CelCompileError):
        ReferenceEngine().compile("amount +", FEE_VARIABLES, "int")


@pytest.mark.parametrize("engine", ENGINES, ids=lambda engine: engine.name)
@pytest.mark.parametrize(
    ("expression", "bounds", "message"),
    [
        ("amount + " * 10 + "1", Bounds(length_max=50), "at most 50"),
        ("(" * 17 + "1" + ")" * 17, Bounds(), "nest more than 16"),
        ("tags.exists(t, t == 'a') && tags.exists(t, t == 'b') && tags.all(t, t != 'c')", Bounds(), "at most 2"),
        ("tags.exists(t, tags.exists(u, u == t))", Bounds(), "inside another"),
        ("[1, 2].map(x, [3].all(y, y > x)).size() > 0", Bounds(), "inside another"),
    ],
)
def test_bounds_refuse_long_deep_or_looping_expressions(engine, expression, bounds, message) -> None:
    with pytest.raises(CelCompileError, match=message):
        engine.compile(expression, FEE_VARIABLES, "int" if expression.startswith("amount") else "bool", bounds)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda engine: engine.name)
def test_bounds_look_at_code_not_at_strings_or_comments(engine) -> None:
    # Quoted macro names count for nothing; a comment's quote cannot hide the loops after it.
    quoted = "'.map(' + \".exists(\" + '''.all(''' + r'(\\d' == '' // .filter(\n|| true"
    assert engine.compile(quoted, FEE_VARIABLES, "bool").evaluate(BASE) is True
    hiding = "true // it's\n&& tags.exists(t, tags.exists(u, u == t))"
    with pytest.raises(CelCompileError, match="inside another"):
        engine.compile(hiding, FEE_VARIABLES, "bool")


def test_code_only_blanks_literals_and_comments_keeping_positions() -> None:
    expression = "a + 'b(c' // d'(\n+ r'\\' + \"\\\"(\""
    code = code_only(expression)
    assert len(code) == len(expression)
    assert "(" not in code and code.startswith("a + ") and "\n+ " in code


_ZEROS = "[" + ",".join(["0"] * 220) + "]"
# The reviewer's repro: two chained comprehensions, concatenation in the second body; 960 characters,
# accepted before, then ~1 s and ~0.5 GB per evaluation (cost ~ length^4).
SLOW_CHAINED = f"{_ZEROS}.map(x, {_ZEROS}).map(y, " + "+".join(["y"] * 25) + ").size() < 0"
_RANGE = "may range only over a list variable or a list literal of constants"


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (SLOW_CHAINED, _RANGE),
        ("tags.map(t, [t, t]).map(y, y == y).size() > 0", _RANGE),  # chained, no concatenation
        ("tags.filter(t, t != 'a').all(t, t != 'b')", _RANGE),
        ("(tags + tags).all(t, t != 'a')", _RANGE),  # a range built by concatenation
        ("(tags).exists(t, t == 'a')", _RANGE),
        ("[[0, 1]][0].all(x, x > 0)", _RANGE),  # an index
        ("[[0, 1], [2]].all(x, size(x) > 0)", _RANGE),  # nested lists: elements that are lists
        ("[amount, 1].all(x, x > 0)", _RANGE),  # elements that are not constants
        ("{'a': [1]}.a.all(k, k > 0)", _RANGE),
        ("[0, 1].map(x, [x] + [x]).size() > 0", "'+' is not allowed inside a comprehension"),
        ("tags.exists(t, t + t + t == 'x')", "'+' is not allowed inside a comprehension"),
        ("tags.all(t, t in tags)", "may not use the list variable tags"),
        ("tags.exists(t, t.matches('^a'))", "matches is not allowed inside a comprehension"),
        ("currency.matches('^' + 'A')", "one string literal"),
        ("matches(currency, '^A')", "text.matches('pattern')"),
        ("currency.matches('(a|t){1000}')", "regular expressions are too large"),
    ],
)
def test_save_time_check_refuses_what_could_cost_more_than_the_bound(condition, message) -> None:
    with pytest.raises(CelCompileError, match=re.escape(message)):
        check_expressions(condition, "0", ENGINES, Bounds(length_max=1_000))


# The README's worked examples (condition, amount) and the comprehensions and regex the table above uses.
README_RULES = [
    ("true", "amount / 100"),
    ("'vip' in tags && 'kyc_verified' in tags", "0"),
    ("amount >= 100000 && (hour >= 22 || hour < 6)", "(amount * 15 + 5000) / 10000"),
    ("tags.exists(t, t.startsWith('risk:')) && amount > 10000", "amount / 100"),
    ("tags.all(t, t != 'blocked') && size(tags) <= 5", "size(tags.filter(t, t.endsWith('_verified'))) * 100"),
    ("['P2P_TRANSFER', 'THAI_QR_PAY'].exists(o, o == operation_type)", "[1, 2].map(x, x * 2)[1] + amount / 1000"),
    ("currency.matches('^[A-Z]{3}$') && 1 in [1, 2].map(x, x * 2)", "amount >= 1000 ? 25 : 10"),
]


@pytest.mark.parametrize(("condition", "amount"), README_RULES)
def test_the_readme_rules_pass_the_save_time_check(condition, amount) -> None:
    check_expressions(condition, amount, ENGINES, Bounds(length_max=1_000))
