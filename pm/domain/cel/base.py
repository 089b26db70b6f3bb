"""What every CEL engine shares: the errors, the declared types, the program interface and the size bounds.

No engine bounds the cost of an evaluation (DESIGN.md §10), so we bound the expression instead, before
any engine sees it (`check_bounds`):
- at most `length_max` characters (a setting at save time; the schema's 2,000 at most);
- brackets nested at most `nesting_max` deep;
- at most `comprehensions_max` comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`),
  never one inside another.
CEL has no loops other than comprehensions and no recursion, and without `cel.bind` (not enabled) an
expression cannot name a value twice without spelling it twice. So one evaluation costs at most in the
order of (expression length) x (longest list it iterates: a literal in the expression, or `tags`, which
the gateway bounds), and never grows exponentially. String and bytes literals and `//` comments are
skipped when counting, so a quoted ".map(" counts for nothing and a comment cannot hide code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# The schema's cap on a stored CEL expression (sql/0003_money_rules.sql); the setting may only lower it.
EXPRESSION_LENGTH_HARD_MAX = 2_000

NESTING_DEPTH_MAX = 16
COMPREHENSIONS_MAX = 2
COMPREHENSION_MACROS = ("all", "exists", "exists_one", "map", "filter")

_MACRO_CALL = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*(\()")
_QUOTES = ("'''", '"""', "'", '"')
_OPENING = "([{"
_CLOSING = ")]}"

# A declared type, spelled as CEL prints it: "bool", "int", "uint", "double", "string", "list(T)".
CelType = str
SCALAR_TYPES = frozenset({"bool", "int", "uint", "double", "string"})
ActivationValue = bool | int | float | str | list[str] | list[int]


class CelError(Exception):
    """Base of the CEL errors; the message is the engine's own, safe to show to the rule's author."""


class CelCompileError(CelError):
    """The expression does not parse, does not type-check, gives the wrong type or is too large."""


class CelEvaluationError(CelError):
    """Evaluation failed: division by zero, overflow, a missing key, or a result of the wrong type."""


class Program(Protocol):
    """A compiled expression: compile once, evaluate many times."""

    expression: str
    result_type: CelType

    def evaluate(self, activation: Mapping[str, ActivationValue]) -> object:
        """The result as a plain Python value of `result_type`, or CelEvaluationError."""
        ...


@dataclass(frozen=True, slots=True)
class Bounds:
    length_max: int = EXPRESSION_LENGTH_HARD_MAX
    nesting_max: int = NESTING_DEPTH_MAX
    comprehensions_max: int = COMPREHENSIONS_MAX

    def __post_init__(self) -> None:
        assert 1 <= self.length_max <= EXPRESSION_LENGTH_HARD_MAX, self.length_max
        assert self.nesting_max >= 1 and self.comprehensions_max >= 0


DEFAULT_BOUNDS = Bounds()


class Engine:
    """The base of every engine: an expression beyond `bounds` is refused before the engine parses it.
    An engine subclasses this and implements `_compile`."""

    name: str

    def compile(
        self,
        expression: str,
        variables: Mapping[str, CelType],
        result_type: CelType,
        bounds: Bounds | None = DEFAULT_BOUNDS,
    ) -> Program:
        """A program, or CelCompileError with the compiler's message. `bounds=None` only for programs
        we compose ourselves from expressions that passed their bounds one by one."""
        if bounds is not None:
            check_bounds(expression, bounds)
        return self._compile(expression, variables, result_type)

    def _compile(self, expression: str, variables: Mapping[str, CelType], result_type: CelType) -> Program:
        raise NotImplementedError


def check_bounds(expression: str, bounds: Bounds) -> None:
    """Raise CelCompileError when the expression is longer, deeper or loops more than `bounds` allow."""
    if len(expression) > bounds.length_max:
        raise CelCompileError(f"the expression has {len(expression)} characters; at most {bounds.length_max}")
    code = code_only(expression)
    macro_openings = {match.start(1) for match in _MACRO_CALL.finditer(code)}
    if len(macro_openings) > bounds.comprehensions_max:
        raise CelCompileError(
            f"the expression has {len(macro_openings)} comprehensions ({', '.join(COMPREHENSION_MACROS)});"
            f" at most {bounds.comprehensions_max}"
        )
    open_is_macro: list[bool] = []
    for position, character in enumerate(code):
        if character in _OPENING:
            is_macro = position in macro_openings
            if is_macro and any(open_is_macro):
                raise CelCompileError("a comprehension inside another comprehension is not allowed")
            open_is_macro.append(is_macro)
            if len(open_is_macro) > bounds.nesting_max:
                raise CelCompileError(f"brackets nest more than {bounds.nesting_max} deep")
        elif character in _CLOSING and open_is_macro:
            open_is_macro.pop()


def code_only(expression: str) -> str:
    """The expression with every string or bytes literal and `//` comment blanked out (same length)."""
    parts: list[str] = []
    index = 0
    for start, end in _text_spans(expression):
        parts.extend((expression[index:start], " " * (end - start)))
        index = end
    parts.append(expression[index:])
    return "".join(parts)


def text_parts(expression: str) -> list[str]:
    """Every string or bytes literal (with its quotes) and `//` comment, as written: the free text of an
    expression, which code_only blanks out."""
    return [expression[start:end] for start, end in _text_spans(expression)]


def _text_spans(expression: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    index, length = 0, len(expression)
    while index < length:
        if expression.startswith("//", index):
            end = expression.find("\n", index)
            end = length if end < 0 else end
        else:
            quote = next((q for q in _QUOTES if expression.startswith(q, index)), None)
            if quote is None:
                index += 1
                continue
            raw = expression[max(0, index - 2) : index].lower().count("r") > 0
            end = _literal_end(expression, index + len(quote), quote, raw)
        spans.append((index, end))
        index = end
    return spans


def _literal_end(expression: str, index: int, quote: str, raw: bool) -> int:
    """Index just past the literal whose body starts at `index` (its end if it is never closed)."""
    length = len(expression)
    while index < length:
        if not raw and expression[index] == "\\":
            index += 2
            continue
        if expression.startswith(quote, index):
            return index + len(quote)
        index += 1
    return length


def parse_type(spelling: CelType) -> tuple[str, ...]:
    """("int",) or ("list", "string") or ("list", "list", "int"): a type as the chain of its wrappers."""
    text = spelling.replace(" ", "")
    chain: list[str] = []
    while text.startswith("list(") and text.endswith(")"):
        chain.append("list")
        text = text[len("list(") : -1]
    assert text in SCALAR_TYPES, f"unsupported CEL type {spelling!r}"
    chain.append(text)
    return tuple(chain)
