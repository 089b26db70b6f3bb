"""What every CEL engine shares: the errors, the declared types, the program interface and the size bounds.

No engine bounds the cost of an evaluation (DESIGN.md §10), so we bound the expression instead, before
any engine sees it (`check_bounds`):
- at most `length_max` characters (a setting at save time; the schema's 2,000 at most);
- brackets nested at most `nesting_max` deep;
- at most `comprehensions_max` comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`),
  never one inside another;
- a comprehension ranges over a declared list variable (`tags`) or a list literal of constants, never
  over a value the expression builds (another comprehension's result, a concatenation, an index);
- inside a comprehension's parentheses there is no `+` (no list or string grows per iteration), no
  list variable, and no `matches`;
- `matches` is only the method form with one string literal as its pattern, and the patterns together
  have at most `REGEX_SIZE_MAX` units (length times every counted repetition `{n}`), so RE2 never
  builds a large program.
CEL has no loops other than comprehensions and no recursion, and without `cel.bind` (not enabled) an
expression cannot name a value twice without spelling it twice; the engines enable only the standard
functions, none of which builds a value larger than its arguments except `+`. With L the expression's
length and T the elements of `tags` (the gateway's `PM_INTENT_TAGS_COUNT_MAX`, at most 256):
- outside comprehensions every operator runs once; a value has at most L x (T + 1) elements (each
  operand of a `+` is spelled, `tags` in 4 characters), so that part is at most L^2 x (T + 1) steps;
- a comprehension runs its body at most R times, R its range (fewer than L/2 constants, or T); the
  body handles only what it spells and one element per iteration, so at most L x R steps; a `map`
  result has at most R x L elements, and nothing may iterate it.
So one evaluation costs at most in the order of L^2 x (T + 1) + L x R steps, a step copying or
comparing one element (a string of at most max(L, 256) characters) or one regex step over a string
of at most that length. Each part is linear in each factor: no chain of operations multiplies sizes.
String and bytes literals and `//` comments are skipped when counting, so a quoted ".map(" counts for
nothing and a comment cannot hide code.
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
# The patterns of one expression together: length with quotes times each counted repetition
# (`'^[A-Z]{3}$'`: 12 x 3 = 36).
# RE2 expands a counted repetition into copies, so this bounds the program it compiles per evaluation.
REGEX_SIZE_MAX = 256

_MACRO_CALL = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*(\()")
_QUOTES = ("'''", '"""', "'", '"')
_OPENING = "([{"
_CLOSING = ")]}"
_NUMBER = re.compile(r"-?\s*(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[uU]?")
_CONSTANT_WORDS = frozenset({"true", "false", "null"})
_STRING_PREFIXES = frozenset({"", "r", "R", "b", "B", "rb", "rB", "Rb", "RB", "br", "bR", "Br", "BR"})
_AFTER_IN = re.compile(r"(?<![A-Za-z0-9_])in$")
_MATCHES = re.compile(r"\bmatches\b")
_COUNTED_REPETITION = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")

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
            check_bounds(expression, bounds, variables)
        return self._compile(expression, variables, result_type)

    def _compile(self, expression: str, variables: Mapping[str, CelType], result_type: CelType) -> Program:
        raise NotImplementedError


def check_bounds(expression: str, bounds: Bounds, variables: Mapping[str, CelType]) -> None:
    """Raise CelCompileError when the expression is longer, deeper or loops more than `bounds` allow, or
    builds what a loop could multiply (module docstring). `variables`: the declared ones, by type."""
    if len(expression) > bounds.length_max:
        raise CelCompileError(f"the expression has {len(expression)} characters; at most {bounds.length_max}")
    code = code_only(expression)
    macros = [(match.start(), match.start(1)) for match in _MACRO_CALL.finditer(code)]
    if len(macros) > bounds.comprehensions_max:
        raise CelCompileError(
            f"the expression has {len(macros)} comprehensions ({', '.join(COMPREHENSION_MACROS)});"
            f" at most {bounds.comprehensions_max}"
        )
    _check_nesting(code, {opening for _, opening in macros}, bounds.nesting_max)
    list_variables = frozenset(name for name, spelling in variables.items() if parse_type(spelling)[0] == "list")
    bodies = []
    for dot, opening in macros:
        if not _range_is_bounded(expression, code, dot, list_variables):
            raise CelCompileError(
                "a comprehension may range only over a list variable or a list literal of constants,"
                " not over a value the expression builds"
            )
        body = (opening, _matching_close(code, opening))
        _check_body(code[body[0] + 1 : body[1]], list_variables)
        bodies.append(body)
    _check_regexes(expression, code, bodies)


def _check_nesting(code: str, macro_openings: set[int], nesting_max: int) -> None:
    open_is_macro: list[bool] = []
    for position, character in enumerate(code):
        if character in _OPENING:
            is_macro = position in macro_openings
            if is_macro and any(open_is_macro):
                raise CelCompileError("a comprehension inside another comprehension is not allowed")
            open_is_macro.append(is_macro)
            if len(open_is_macro) > nesting_max:
                raise CelCompileError(f"brackets nest more than {nesting_max} deep")
        elif character in _CLOSING and open_is_macro:
            open_is_macro.pop()


def _check_body(body: str, list_variables: frozenset[str]) -> None:
    """What a comprehension's parentheses may not hold: what would grow or cost more per iteration."""
    if "+" in body:
        raise CelCompileError(
            "'+' is not allowed inside a comprehension (it could concatenate lists or strings on every"
            " iteration); compute it outside"
        )
    named = sorted(name for name in list_variables if re.search(rf"\b{re.escape(name)}\b", body))
    if named:
        raise CelCompileError(f"a comprehension's body may not use the list variable {named[0]}")


def _range_is_bounded(expression: str, code: str, dot: int, list_variables: frozenset[str]) -> bool:
    """Whether what precedes `.macro(` at `dot` is a bare list variable or a list literal of constants."""
    end = _skip_spaces_back(code, dot - 1)
    if end < 0:
        return False
    if code[end] == "]":
        start = _matching_open(code, end)
        before = _skip_spaces_back(code, start - 1)
        after_in = _AFTER_IN.search(code[: before + 1]) is not None  # `x in [1, 2].all(...)`: not an index
        is_index = before >= 0 and (code[before].isalnum() or code[before] in "_)]}") and not after_in
        return start >= 0 and not is_index and _only_constants(expression[start + 1 : end], code[start + 1 : end])
    start = end
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] == "_"):
        start -= 1
    before = _skip_spaces_back(code, start - 1)
    selected = before >= 0 and code[before] == "."
    return not selected and code[start : end + 1] in list_variables


def _only_constants(original: str, code: str) -> bool:
    """Whether a list literal's inside holds only numbers, strings, true, false and null."""
    if any(character in code for character in _OPENING + _CLOSING):
        return False
    index = 0
    for item_code in code.split(","):
        item_original = original[index : index + len(item_code)].strip()
        index += len(item_code) + 1
        item = item_code.strip()
        is_string = item in _STRING_PREFIXES and item_original != item
        is_empty = item == "" and item_original == ""
        if not (is_string or is_empty or item in _CONSTANT_WORDS or _NUMBER.fullmatch(item)):
            return False
    return True


def _check_regexes(expression: str, code: str, bodies: list[tuple[int, int]]) -> None:
    """`matches` only as `s.matches('pattern')`, outside comprehensions, with small patterns in all."""
    size = 0
    for match in _MATCHES.finditer(code):
        if any(opening < match.start() < closing for opening, closing in bodies):
            raise CelCompileError("matches is not allowed inside a comprehension")
        before = _skip_spaces_back(code, match.start() - 1)
        after = match.end() + len(code[match.end() :]) - len(code[match.end() :].lstrip())
        if before < 0 or code[before] != "." or not code.startswith("(", after):
            raise CelCompileError("write matches as text.matches('pattern')")
        closing = _matching_close(code, after)
        pattern = _single_literal(expression, code, after + 1, closing)
        if pattern is None:
            raise CelCompileError("the pattern of matches must be one string literal")
        size += _regex_size(pattern)
    if size > REGEX_SIZE_MAX:
        raise CelCompileError(
            f"the regular expressions are too large ({size} units, counted repetitions multiplied);"
            f" at most {REGEX_SIZE_MAX}"
        )


def _single_literal(expression: str, code: str, start: int, end: int) -> str | None:
    """The text of the one (non-bytes) string literal that is all of expression[start:end], else None."""
    spans = [span for span in _text_spans(expression) if start <= span[0] < end]
    if len(spans) != 1 or spans[0][1] > end or code[start:end].strip() not in ("", "r", "R"):
        return None
    if expression[spans[0][0] : spans[0][1]].startswith("//"):
        return None
    return expression[spans[0][0] : spans[0][1]]


def _regex_size(pattern: str) -> int:
    size = len(pattern)
    for match in _COUNTED_REPETITION.finditer(pattern):
        low, high = int(match.group(1)), match.group(2)
        size *= max(1, low + 1 if high == "" else int(high or low))
        size = min(size, REGEX_SIZE_MAX + 1)
    return size


def _skip_spaces_back(code: str, index: int) -> int:
    while index >= 0 and code[index].isspace():
        index -= 1
    return index


def _matching_close(code: str, opening: int) -> int:
    """Index of the bracket closing the one at `opening` (the end of the code if it never closes)."""
    depth = 0
    for index in range(opening, len(code)):
        if code[index] in _OPENING:
            depth += 1
        elif code[index] in _CLOSING:
            depth -= 1
            if depth == 0:
                return index
    return len(code)


def _matching_open(code: str, closing: int) -> int:
    """Index of the bracket opening the one at `closing` (-1 if none)."""
    depth = 0
    for index in range(closing, -1, -1):
        if code[index] in _CLOSING:
            depth += 1
        elif code[index] in _OPENING:
            depth -= 1
            if depth == 0:
                return index
    return -1


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
