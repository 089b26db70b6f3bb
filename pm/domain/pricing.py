"""Fee pricing: which fee rules apply to an intent, and what it pays. Pure: no I/O.

    rules = RuleSet(ProductionEngine(), [FeeRule(...), ...])   # compiles each rule once
    fees = rules.price(PricingRequest(...))                     # Fees, or PricingError

The rules, as the README's "Fee rules" section states them:
- A rule applies when it is enabled, valid at the intent's creation time (`valid_from <= t < valid_to`,
  either end open when null), is in the intent's currency (its min and max fees are in that currency's
  minor units), names the intent's operation type and channel (null: any), and its CEL `condition` is
  true. Variables: `FEE_VARIABLES`; `hour` is the local hour in Asia/Bangkok.
- Per kind, the FIRST applying rule in priority order (lower priority first, then the older rule)
  prices the intent; later rules of that kind are not consulted. So `priority` means something, a
  specific rule overrides a general one without negative fees, and one amount is evaluated per kind.
- The fee is the rule's CEL `amount`, an int of minor units: integer arithmetic, where division
  truncates toward zero (`amount * 15 / 1000` of 1,999 is 29); write `(amount * 15 + 500) / 1000` to
  round half up. Then it is clamped to [min_fee_minor, max_fee_minor].
- A condition or amount that fails to evaluate (or does not compile any more), or a negative amount,
  refuses the intent: FEE_RULE_ERROR naming the rule. A POST fee equal to the amount or above it:
  FEE_EXCEEDS_AMOUNT (the recipient would get nothing, or less than nothing).
- A fee above the caller's bound (`max_fee_pre_minor` / `max_fee_post_minor` of POST /intents and
  POST /quote: the fees it agreed to) refuses the intent: FEE_CHANGED (`check_fee_bounds`).
- ADMIN_ADJUSTMENT is never priced: a correction carries no fee, and its channel has no fee leg.

Speed: the applying candidates of one (operation type, channel, currency) are also compiled together into one
program, `[first PRE match, first POST match]` as nested CEL conditionals, so an intent costs one
evaluation instead of one per rule. That program follows the same order and short-circuits the same
way; when it fails, the rules are evaluated one by one to name the rule that failed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pm.domain.cel import Bounds, CelCompileError, CelEvaluationError, Engine, Program
from pm.domain.intent import ErrorCode
from pm.domain.money import CURRENCIES

WALLET_TIME_ZONE = ZoneInfo("Asia/Bangkok")
FEE_VARIABLES = {
    "amount": "int",
    "currency": "string",
    "operation_type": "string",
    "channel": "string",
    "tags": "list(string)",
    "sender_id": "int",
    "recipient_id": "int",
    "hour": "int",
}
UNPRICED_OPERATIONS = frozenset({"ADMIN_ADJUSTMENT"})
BIGINT_MAX = 2**63 - 1
# Candidates of one (operation type, channel, currency) compiled into one program at most; beyond it, one by one.
COMBINED_RULES_MAX = 32
# Combined programs kept per rule set (one per distinct set of candidates); cleared when full.
COMBINED_PROGRAMS_MAX = 256
_NO_MATCH = -1


class FeeKind(enum.StrEnum):
    PRE = "PRE"  # the sender pays it on top of the amount
    POST = "POST"  # deducted from what the recipient gets


@dataclass(frozen=True, slots=True)
class FeeRuleFields:
    """What an author writes (the admin API's body): a rule without its id and version."""

    name: str
    operation_type: str | None
    channel: str | None
    condition: str
    amount: str
    kind: FeeKind
    priority: int
    min_fee_minor: int = 0  # the admin API turns a null into 0
    max_fee_minor: int | None = None  # None: no maximum
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    enabled: bool = True
    # The ISO 4217 code of the intents it prices; min_fee_minor and max_fee_minor are in its minor units.
    # Keyword-only and without a default, as a limit rule's: a fee bound means nothing without its currency.
    currency: str = field(kw_only=True)

    def __post_init__(self) -> None:
        assert self.currency in CURRENCIES, self.currency
        # As the schema's CHECKs (sql/0003): clamp() needs an integer floor and a ceiling not below it.
        assert isinstance(self.min_fee_minor, int) and self.min_fee_minor >= 0, self.min_fee_minor
        assert self.max_fee_minor is None or self.max_fee_minor >= self.min_fee_minor, self.max_fee_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeRule(FeeRuleFields):
    """One version of a fee rule, as stored in pm.fee_rule / pm.fee_rule_version."""

    id: int
    version: int

    def valid_at(self, at: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= at) and (self.valid_to is None or at < self.valid_to)

    def clamp(self, fee_minor: int) -> int:
        fee_minor = max(fee_minor, self.min_fee_minor)
        return fee_minor if self.max_fee_minor is None else min(fee_minor, self.max_fee_minor)

    @property
    def label(self) -> str:
        return f"fee rule {self.id} (version {self.version})"


@dataclass(frozen=True, slots=True)
class PricingRequest:
    """What a rule may look at: the intent's fields and the time it was made (timezone-aware)."""

    operation_type: str
    channel: str | None
    amount_minor: int
    currency: str
    tags: Sequence[str]
    sender_id: int | None
    recipient_id: int | None
    at: datetime

    def activation(self) -> dict[str, Any]:
        assert self.at.tzinfo is not None, "pricing needs an aware time for the local hour"
        return {
            "amount": self.amount_minor,
            "currency": self.currency,
            "operation_type": self.operation_type,
            "channel": self.channel or "",
            "tags": list(self.tags),
            "sender_id": self.sender_id or 0,  # users are positive: 0 means "none" (an adjustment)
            "recipient_id": self.recipient_id or 0,
            "hour": self.at.astimezone(WALLET_TIME_ZONE).hour,
        }


@dataclass(frozen=True, slots=True)
class AppliedRule:
    id: int
    version: int
    kind: FeeKind
    fee_minor: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "kind": str(self.kind), "fee_minor": self.fee_minor}


@dataclass(frozen=True, slots=True)
class Fees:
    fee_pre_minor: int
    fee_post_minor: int
    rules: tuple[AppliedRule, ...]

    def quote(self, amount_minor: int) -> dict[str, Any]:
        """What each party would see (POST /quote): the sender pays a + f, the recipient gets a - g."""
        return {
            "fee_pre_minor": self.fee_pre_minor,
            "fee_post_minor": self.fee_post_minor,
            "sender_debit_minor": amount_minor + self.fee_pre_minor,
            "recipient_credit_minor": amount_minor - self.fee_post_minor,
            "rules": [rule.to_json() for rule in self.rules],
        }


NO_FEES = Fees(0, 0, ())


def check_fee_bounds(fees: Fees, max_fee_pre_minor: int | None, max_fee_post_minor: int | None) -> None:
    """PricingError FEE_CHANGED when a fee is above the caller's bound (None: no bound); at or below it
    the fees stand. The bound is what the user was shown (the quote's fees): the rules may have changed
    since, and a user pays no fee they did not see."""
    for kind, fee_minor, bound_minor in (
        ("PRE", fees.fee_pre_minor, max_fee_pre_minor),
        ("POST", fees.fee_post_minor, max_fee_post_minor),
    ):
        if bound_minor is not None and fee_minor > bound_minor:
            field = f"max_fee_{kind.lower()}_minor"
            message = f"the {kind} fee is now {fee_minor}, above {field} {bound_minor}: quote again"
            raise PricingError(ErrorCode.FEE_CHANGED, message)


class PricingError(Exception):
    """The intent cannot be priced: REJECTED with `code`; `rule_id` names the rule at fault, if one is."""

    def __init__(self, code: ErrorCode, message: str, rule_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rule_id = rule_id


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: FeeRule
    condition: Program | None
    amount: Program | None
    compile_error: str | None = None


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule's verdict for one request (`pm rules test`): matched, its fee, or its error."""

    rule: FeeRule
    matched: bool
    fee_minor: int | None = None
    error: str | None = None


def compile_rule(engine: Engine, rule: FeeRule) -> CompiledRule:
    """Both expressions compiled; a rule that no longer compiles is kept, broken, so that pricing refuses
    the intents it would apply to instead of silently skipping it."""
    try:
        condition = engine.compile(rule.condition, FEE_VARIABLES, "bool")
        amount = engine.compile(rule.amount, FEE_VARIABLES, "int")
    except CelCompileError as exc:
        return CompiledRule(rule, None, None, str(exc))
    return CompiledRule(rule, condition, amount)


class RuleSet:
    """The enabled fee rules of one moment, each compiled once (reused from `previous` when unchanged)."""

    def __init__(
        self, engine: Engine, rules: Iterable[FeeRule], previous: RuleSet | None = None, generation: int = 0
    ) -> None:
        reusable = {} if previous is None or previous.engine is not engine else previous._by_version
        self.engine = engine
        self.generation = generation
        ordered = sorted((rule for rule in rules if rule.enabled), key=lambda rule: (rule.priority, rule.id))
        self.rules = tuple(reusable.get((rule.id, rule.version)) or compile_rule(engine, rule) for rule in ordered)
        self._by_version = {(c.rule.id, c.rule.version): c for c in self.rules}
        # Per (operation type, channel, currency): the candidates, and whether any has a validity window.
        # Keys come from known operation types, channels and currencies (the gateway and validation refuse
        # others): few.
        self._candidates: dict[tuple[str, str | None, str], tuple[tuple[CompiledRule, ...], bool]] = {}
        self._combined: dict[tuple[object, ...], Program | None] = {}

    def price(self, request: PricingRequest) -> Fees:
        """The fees of the request, or PricingError (module docstring)."""
        if request.operation_type in UNPRICED_OPERATIONS:
            return NO_FEES
        candidates, combined_key = self._valid_candidates(request)
        if not candidates:
            return NO_FEES
        activation = request.activation()
        chosen = self._choose_combined(candidates, combined_key, activation)
        if chosen is None:
            chosen = self._choose_one_by_one(candidates, activation)
        return _fees(request, chosen)

    def explain(self, request: PricingRequest) -> list[RuleOutcome]:
        """Every candidate rule's own verdict, each evaluated (unlike `price`, which stops at the first)."""
        if request.operation_type in UNPRICED_OPERATIONS:
            return []
        activation = request.activation()
        return [_outcome(compiled, activation) for compiled in self._valid_candidates(request)[0]]

    def _valid_candidates(self, request: PricingRequest) -> tuple[tuple[CompiledRule, ...], tuple[object, ...]]:
        """The candidates valid at the request's time, and the key of their combined program: the
        (operation type, channel, currency) when no candidate has a window (the usual case: nothing to build
        per intent), else the candidates' ids. A rule prices only intents of its own currency."""
        key = (request.operation_type, request.channel, request.currency)
        entry = self._candidates.get(key)
        if entry is None:
            candidates = tuple(c for c in self.rules if _names(c.rule, request))
            windowed = any(c.rule.valid_from is not None or c.rule.valid_to is not None for c in candidates)
            entry = self._candidates[key] = (candidates, windowed)
        candidates, windowed = entry
        if not windowed:
            return candidates, key
        valid = tuple(c for c in candidates if c.rule.valid_at(request.at))
        return valid, tuple(c.rule.id for c in valid)

    def _choose_combined(
        self, candidates: tuple[CompiledRule, ...], key: tuple[object, ...], activation: dict[str, Any]
    ) -> list[tuple[CompiledRule, int]] | None:
        """The first match per kind from one evaluation; None when it cannot be used or fails."""
        program = self._combined_program(candidates, key)
        if program is None:
            return None
        try:
            result = program.evaluate(activation)
        except CelEvaluationError:
            return None  # one by one names the rule that failed
        assert isinstance(result, list) and len(result) == 2, result
        return [(candidates[index], fee) for index, fee in result if index != _NO_MATCH]

    def _combined_program(self, candidates: tuple[CompiledRule, ...], key: tuple[object, ...]) -> Program | None:
        if key in self._combined:
            return self._combined[key]
        program = None
        if len(candidates) <= COMBINED_RULES_MAX and all(c.compile_error is None for c in candidates):
            try:
                program = self.engine.compile(_combined_expression(candidates), FEE_VARIABLES, "list(list(int))", None)
            except CelCompileError:
                program = None  # e.g. too deep for a parser: one by one is always right
        if len(self._combined) >= COMBINED_PROGRAMS_MAX:
            self._combined.clear()
        self._combined[key] = program
        return program

    def _choose_one_by_one(
        self, candidates: tuple[CompiledRule, ...], activation: dict[str, Any]
    ) -> list[tuple[CompiledRule, int]]:
        chosen = []
        for kind in FeeKind:
            for compiled in candidates:
                if compiled.rule.kind != kind:
                    continue
                if _evaluate(compiled, "condition", activation):
                    chosen.append((compiled, _evaluate(compiled, "amount", activation)))
                    break
        return chosen


def _names(rule: FeeRule, request: PricingRequest) -> bool:
    """Whether the rule is one for the request's currency, operation type and channel (null: any)."""
    return (
        rule.currency == request.currency
        and rule.operation_type in (None, request.operation_type)
        and rule.channel in (None, request.channel)
    )


def _combined_expression(candidates: tuple[CompiledRule, ...]) -> str:
    """`[PRE chain, POST chain]`; a chain is `c1 ? [0, a1] : (c2 ? [1, a2] : [-1, 0])` in priority order.

    Each expression sits on lines of its own, so a `//` comment in it cannot swallow what follows."""
    chains = []
    for kind in FeeKind:
        chain = f"[{_NO_MATCH}, 0]"
        for index in reversed(range(len(candidates))):
            compiled = candidates[index]
            if compiled.rule.kind == kind:
                chain = f"((\n{compiled.rule.condition}\n) ? [{index}, (\n{compiled.rule.amount}\n)] : {chain})"
        chains.append(chain)
    return f"[{chains[0]}, {chains[1]}]"


def _evaluate(compiled: CompiledRule, which: str, activation: dict[str, Any]) -> Any:
    rule = compiled.rule
    program = compiled.condition if which == "condition" else compiled.amount
    if program is None:
        raise PricingError(
            ErrorCode.FEE_RULE_ERROR, f"{rule.label} does not compile: {compiled.compile_error}", rule.id
        )
    try:
        return program.evaluate(activation)
    except CelEvaluationError as exc:
        raise PricingError(ErrorCode.FEE_RULE_ERROR, f"{rule.label}: the {which} failed: {exc}", rule.id) from None


def _fees(request: PricingRequest, chosen: list[tuple[CompiledRule, int]]) -> Fees:
    fees = {FeeKind.PRE: 0, FeeKind.POST: 0}
    applied = []
    for compiled, raw_fee_minor in chosen:
        rule = compiled.rule
        if isinstance(raw_fee_minor, bool) or not isinstance(raw_fee_minor, int):
            raise PricingError(ErrorCode.FEE_RULE_ERROR, f"{rule.label} gave a non-integer fee", rule.id)
        if raw_fee_minor < 0:
            raise PricingError(ErrorCode.FEE_RULE_ERROR, f"{rule.label} gave a negative fee: {raw_fee_minor}", rule.id)
        fee_minor = rule.clamp(raw_fee_minor)
        fees[rule.kind] = fee_minor
        applied.append(AppliedRule(rule.id, rule.version, rule.kind, fee_minor))
    # Equal is refused too: the recipient (or the PSP's payout) would get 0, a movement of nothing.
    if fees[FeeKind.POST] >= request.amount_minor:
        raise PricingError(
            ErrorCode.FEE_EXCEEDS_AMOUNT,
            f"the POST fee {fees[FeeKind.POST]} is not below the amount {request.amount_minor}",
        )
    if request.amount_minor + fees[FeeKind.PRE] > BIGINT_MAX:
        raise PricingError(ErrorCode.FEE_RULE_ERROR, "the amount plus the PRE fee does not fit in 64 bits")
    return Fees(fees[FeeKind.PRE], fees[FeeKind.POST], tuple(applied))


def _outcome(compiled: CompiledRule, activation: dict[str, Any]) -> RuleOutcome:
    try:
        if not _evaluate(compiled, "condition", activation):
            return RuleOutcome(compiled.rule, matched=False)
        raw_fee_minor = _evaluate(compiled, "amount", activation)
    except PricingError as exc:
        return RuleOutcome(compiled.rule, matched=False, error=exc.message)
    if raw_fee_minor < 0:
        return RuleOutcome(compiled.rule, matched=True, error=f"negative fee {raw_fee_minor}")
    return RuleOutcome(compiled.rule, matched=True, fee_minor=compiled.rule.clamp(raw_fee_minor))


def check_expressions(condition: str, amount: str, engines: Sequence[Engine], bounds: Bounds) -> None:
    """Refuse (CelCompileError, saying which expression) a rule that any engine cannot compile: the
    production engine type-checks against FEE_VARIABLES, the reference one keeps rules standard CEL."""
    for which, expression, result_type in (("condition", condition, "bool"), ("amount", amount, "int")):
        for engine in engines:
            try:
                engine.compile(expression, FEE_VARIABLES, result_type, bounds)
            except CelCompileError as exc:
                raise CelCompileError(f"{which}: {exc}") from None
