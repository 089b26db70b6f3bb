"""The production CEL engine: Google's C++ CEL through `cel-expr-python`.

It type-checks at compile time against the declared variables, so a rule with a type error is refused
when it is saved. It reports evaluation errors as values, not exceptions (DESIGN.md §10): every result's
type is checked, and an ERROR value becomes CelEvaluationError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cel_expr_python import cel

from pm.domain.cel.base import ActivationValue, CelCompileError, CelEvaluationError, CelType, Engine, parse_type

_SCALARS = {
    "bool": cel.Type.BOOL,
    "int": cel.Type.INT,
    "uint": cel.Type.UINT,
    "double": cel.Type.DOUBLE,
    "string": cel.Type.STRING,
}
# The C++ library wraps its status around the message: "INVALID_ARGUMENT: ERROR: <input>:1:8: ... [INVALID_ARGUMENT]".
_STATUS_PREFIX = "INVALID_ARGUMENT: "
_STATUS_SUFFIX = " [INVALID_ARGUMENT]"
# ... and an evaluation error's message: "OUT_OF_RANGE: integer overflow".
_STATUS_CODE = re.compile(r"^[A-Z_]+: ")


class ProductionEngine(Engine):
    name = "cel-expr-python"

    def __init__(self) -> None:
        # One environment per set of declared variables (building one costs far more than a compile).
        self._environments: dict[tuple[tuple[str, CelType], ...], cel.Env] = {}

    def _compile(self, expression: str, variables: Mapping[str, CelType], result_type: CelType) -> ProductionProgram:
        try:
            compiled = self._environment(variables).compile(expression)
        except RuntimeError as exc:
            raise CelCompileError(_compiler_message(exc)) from None
        expected = _cel_type(parse_type(result_type))
        actual = compiled.return_type()
        if actual != expected:
            raise CelCompileError(f"the expression gives {actual.name().lower()}; it must give {result_type}")
        return ProductionProgram(expression, result_type, compiled)

    def _environment(self, variables: Mapping[str, CelType]) -> cel.Env:
        key = tuple(sorted(variables.items()))
        environment = self._environments.get(key)
        if environment is None:
            declared = {name: _cel_type(parse_type(spelling)) for name, spelling in key}
            environment = cel.NewEnv(variables=declared)
            self._environments[key] = environment
        return environment


class ProductionProgram:
    __slots__ = ("_compiled", "expression", "result_type")

    def __init__(self, expression: str, result_type: CelType, compiled: cel.Expression) -> None:
        self.expression = expression
        self.result_type = result_type
        self._compiled = compiled

    def evaluate(self, activation: Mapping[str, ActivationValue]) -> object:
        try:
            value = self._compiled.eval(data=activation)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CelEvaluationError(f"evaluation failed: {exc}") from None
        if value.type() == cel.Type.ERROR:
            raise CelEvaluationError(_STATUS_CODE.sub("", str(value.value()), count=1) or "evaluation failed")
        # No check of the value's type here: the checker proved at compile time that the expression gives
        # exactly `result_type` (dyn is refused), so any value that is not an error is of that type.
        return value.plain_value()


def _cel_type(chain: tuple[str, ...]) -> cel.Type:
    if chain[0] == "list":
        return cel.Type.List(_cel_type(chain[1:]))
    return _SCALARS[chain[0]]


def _compiler_message(exc: RuntimeError) -> str:
    message = str(exc).strip()
    message = message.removeprefix(_STATUS_PREFIX).removesuffix(_STATUS_SUFFIX)
    return message or "the expression does not compile"
