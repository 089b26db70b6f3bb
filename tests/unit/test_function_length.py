"""Proves every function of the project and its tests fits on one screen (STYLE.md 10, TigerStyle's ~70
lines): each `def` and `async def`, nested ones included, read with `ast` (not run), is at most 70 lines
from its first line (decorators aside) to its last, and each longer one fails the test by
file:function:lines. The allow-list holds only the OpenAPI document's two literals, and it cannot rot:
an allow-listed function that is gone or no longer too long fails the test too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIRECTORIES = ("pm", "gateway", "consumers", "channels", "ledger", "tests")  # not bench/: throwaway scripts
LINES_MAX = 70
# (file, function) -> why it may be longer: data written as code, which splitting would only scatter.
ALLOWED = {
    ("gateway/openapi.py", "_paths"): "the OpenAPI paths object, one literal",
    ("gateway/openapi.py", "_schemas"): "the OpenAPI schemas object, one literal",
}


def function_lengths(source: str) -> list[tuple[str, int]]:
    """(name, lines) of every function in `source`, nested ones included, in the order they appear."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def too_long(source: str) -> list[tuple[str, int]]:
    return [(name, lines) for name, lines in function_lengths(source) if lines > LINES_MAX]


def project_files() -> list[Path]:
    files = [path for directory in DIRECTORIES for path in sorted((ROOT / directory).rglob("*.py"))]
    assert len(files) > 100, f"only {len(files)} Python files found under {ROOT}: is ROOT right?"
    return files


def test_no_function_is_longer_than_70_lines() -> None:
    found = [
        (path.relative_to(ROOT).as_posix(), name, lines)
        for path in project_files()
        for name, lines in too_long(path.read_text())
    ]
    offenders = [f"{file}:{name}:{lines}" for file, name, lines in found if (file, name) not in ALLOWED]
    assert not offenders, f"longer than {LINES_MAX} lines, file:function:lines (split them): {offenders}"
    stale = sorted(f"{file}:{name}" for file, name in ALLOWED.keys() - {(file, name) for file, name, _ in found})
    assert not stale, f"allow-listed but gone or no longer over {LINES_MAX} lines (remove from ALLOWED): {stale}"


def synthetic_function(lines: int, is_async: bool = False) -> str:
    """Source of one function `lines` long: its `def` line and `lines - 1` statements, one nested."""
    body = ["    def inner():", "        return 0"] + [f"    x{n} = {n}" for n in range(lines - 3)]
    return "\n".join([f"{'async ' if is_async else ''}def synthetic():", *body]) + "\n"


def test_the_measure_flags_71_lines_and_passes_70() -> None:
    assert function_lengths(synthetic_function(70)) == [("synthetic", 70), ("inner", 2)]
    assert too_long(synthetic_function(70)) == []
    assert too_long(synthetic_function(71)) == [("synthetic", 71)]
    assert too_long(synthetic_function(71, is_async=True)) == [("synthetic", 71)]
    nested = "def outer():\n" + "".join(f"    {line}\n" for line in synthetic_function(71).splitlines())
    assert too_long(nested) == [("outer", 72), ("synthetic", 71)]
