"""The reference CEL engine: `cel-python` (pure Python, the engine the user named).

It is the yardstick, not the workhorse (1,100-4,500 evaluations/s here, DESIGN.md §10): a table test holds
the production engine to it, so our rules stay standard CEL. It has no type checker: compiling parses
only, and the result's type is checked at every evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import celpy
from celpy import celtypes

from pm.domain.cel.base import ActivationValue, CelCompileError, CelEvaluationError, CelType, Engine, parse_type

_ANNOTATIONS = {
    "bool": celtypes.BoolType,
    "int": celtypes.IntType,
    "uint": celtypes.UintType,
    "double": celtypes.DoubleType,
    "string": celtypes.StringType,
}
# What an evaluation may raise besides CELEvalError: celpy lets some Python errors through.
_EVALUATION_FAILURES = (celpy.CELEvalError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError)

# celpy logs every evaluation step at DEBUG; a PM process at DEBUG would drown in it.
logging.getLogger("celpy").setLevel(logging.WARNING)
logging.getLogger("Evaluator").setLevel(logging.WARNING)


class ReferenceEngine(Engine):
    name = "cel-python"

    def _compile(self, expression: str, variables: Mapping[str, CelType], result_type: CelType) -> ReferenceProgram:
        annotations = {name: _annotation(parse_type(spelling)) for name, spelling in variables.items()}
        environment = celpy.Environment(annotations=annotations)  # type: ignore[arg-type]
        try:
            tree = environment.compile(expression)
            runner = environment.program(tree)
        except (celpy.CELParseError, ValueError, TypeError, RecursionError) as exc:
            raise CelCompileError(str(exc).strip() or "the expression does not parse") from None
        return ReferenceProgram(expression, result_type, runner, dict(variables))


class ReferenceProgram:
    __slots__ = ("_result_type", "_runner", "_variables", "expression", "result_type")

    def __init__(
        self, expression: str, result_type: CelType, runner: celpy.Runner, variables: dict[str, CelType]
    ) -> None:
        self.expression = expression
        self.result_type = result_type
        self._runner = runner
        self._result_type = parse_type(result_type)
        self._variables = {name: parse_type(spelling) for name, spelling in variables.items()}

    def evaluate(self, activation: Mapping[str, ActivationValue]) -> object:
        values = {
            name: _to_cel(value, self._variables[name]) for name, value in activation.items() if name in self._variables
        }
        try:
            result = self._runner.evaluate(values)
        except _EVALUATION_FAILURES as exc:
            raise CelEvaluationError(_evaluation_message(exc)) from None
        if isinstance(result, celpy.CELEvalError):
            raise CelEvaluationError(_evaluation_message(result))
        if not _is_of_type(result, self._result_type):
            raise CelEvaluationError(f"the result {result!r} is not of type {self.result_type}")
        return _to_plain(result)


def _annotation(chain: tuple[str, ...]) -> type:
    return celtypes.ListType if chain[0] == "list" else _ANNOTATIONS[chain[0]]


def _to_cel(value: ActivationValue, chain: tuple[str, ...]) -> object:
    head = chain[0]
    if head == "list":
        assert isinstance(value, list | tuple), value
        return celtypes.ListType([_to_cel(item, chain[1:]) for item in value])
    return _ANNOTATIONS[head](value)


def _is_of_type(value: object, chain: tuple[str, ...]) -> bool:
    """On celpy's own types: unlike plain Python, they tell int, uint and bool apart."""
    head = chain[0]
    if head == "list":
        return isinstance(value, list) and all(_is_of_type(item, chain[1:]) for item in value)
    if head == "bool":
        return isinstance(value, bool | celtypes.BoolType)
    if head == "int":
        return isinstance(value, int) and not isinstance(value, bool | celtypes.BoolType | celtypes.UintType)
    if head == "uint":
        return isinstance(value, celtypes.UintType)
    if head == "double":
        return isinstance(value, float)
    return isinstance(value, str)


def _to_plain(value: object) -> object:
    if isinstance(value, list):
        return [_to_plain(item) for item in value]
    if isinstance(value, bool | celtypes.BoolType):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _evaluation_message(exc: BaseException) -> str:
    arguments = getattr(exc, "args", ())
    first = arguments[0] if arguments else exc
    return str(first).strip() or type(exc).__name__
