"""CEL (Common Expression Language) behind one small interface, with two engines.

    engine = ProductionEngine()                                   # or ReferenceEngine()
    program = engine.compile("amount * 15 / 1000", {"amount": "int"}, "int")   # or CelCompileError
    program.evaluate({"amount": 150_000})                         # 2250, or CelEvaluationError

`ProductionEngine` is Google's C++ CEL (`cel-expr-python`): type-checked at compile time, 100,000+
evaluations/s. `ReferenceEngine` is `cel-python`: the yardstick the production engine is tested against.
Both refuse expressions beyond `Bounds` (length, nesting, comprehensions) before compiling: see
`pm.domain.cel.base` for why that bounds the cost of an evaluation.

Exceptions:
    CelError
    ├── CelCompileError       does not parse or type-check, gives the wrong type, or is too large
    └── CelEvaluationError    failed at evaluation, or gave a result of the wrong type
"""

from __future__ import annotations

from pm.domain.cel.base import (
    DEFAULT_BOUNDS,
    EXPRESSION_LENGTH_HARD_MAX,
    Bounds,
    CelCompileError,
    CelError,
    CelEvaluationError,
    CelType,
    Engine,
    Program,
)
from pm.domain.cel.production import ProductionEngine
from pm.domain.cel.reference import ReferenceEngine

ENGINES: dict[str, type[ProductionEngine] | type[ReferenceEngine]] = {
    "production": ProductionEngine,
    "reference": ReferenceEngine,
}

__all__ = [
    "DEFAULT_BOUNDS",
    "ENGINES",
    "EXPRESSION_LENGTH_HARD_MAX",
    "Bounds",
    "CelCompileError",
    "CelError",
    "CelEvaluationError",
    "CelType",
    "Engine",
    "ProductionEngine",
    "Program",
    "ReferenceEngine",
]
