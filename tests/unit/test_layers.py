"""Proves the arrows between the packages point only inward (issue 11): every module's imports, read with
`ast` (not run), are checked against the table below, and each import outside it fails the test by name.

    pm.domain            the I/O-free core: the standard library and the CEL engines only
    pm.config            -> pm.domain (settings, topology, constants, metric names)
    pm.store, pm.redis,  -> pm.domain, pm.config and their own driver (asyncpg; redis; aiohttp)
    pm.psp, pm.webhooks
    pm.client            the SDK: -> pm.domain, aiohttp
    ledger               -> tigerbeetle and asyncpg only: it knows nothing of PM
    channels             -> pm.domain, pm.psp, ledger.accounts
    gateway, consumers   -> any of those, never each other
    pm.cli, pm.dev       -> anything; imported only by each other, tests and bench
Imports under `if TYPE_CHECKING:` count too: a type named across a layer is an arrow all the same.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pm", "ledger", "channels", "gateway", "consumers")
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}

# layer -> (project prefixes it may import, third-party top-level modules it may import)
LAYERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "pm.domain": (("pm.domain",), frozenset({"cel_expr_python", "celpy"})),
    "pm.config": (
        ("pm.domain", "pm.config"),
        frozenset({"pydantic", "pydantic_settings", "yaml", "prometheus_client"}),
    ),
    "pm.store": (("pm.domain", "pm.config", "pm.store"), frozenset({"asyncpg", "orjson"})),
    "pm.redis": (("pm.domain", "pm.config", "pm.redis"), frozenset({"redis", "hiredis", "orjson"})),
    "pm.psp": (("pm.domain", "pm.config", "pm.psp"), frozenset({"aiohttp"})),
    "pm.webhooks": (("pm.domain", "pm.config", "pm.webhooks"), frozenset({"aiohttp", "yarl"})),
    "pm.client": (("pm.domain", "pm.client"), frozenset({"aiohttp", "yarl"})),
    "ledger": (("ledger",), frozenset({"tigerbeetle", "asyncpg"})),
    "channels": (("channels", "pm.domain", "pm.psp", "ledger.accounts"), frozenset({"tigerbeetle"})),
    "gateway": (
        ("gateway", "pm.domain", "pm.config", "pm.store", "pm.redis", "pm.psp", "pm.webhooks", "ledger", "channels"),
        frozenset(
            {"aiohttp", "aiohttp_sse", "asyncpg", "redis", "orjson", "pydantic", "pydantic_core", "prometheus_client",
             "tigerbeetle", "uvloop"}
        ),
    ),
    "consumers": (
        ("consumers", "pm.domain", "pm.config", "pm.store", "pm.redis", "pm.psp", "pm.webhooks", "ledger", "channels"),
        frozenset({"faststream", "asyncpg", "redis", "orjson", "tigerbeetle", "aiohttp", "prometheus_client"}),
    ),
    "pm.cli": ((), frozenset()),  # anything
    "pm.dev": ((), frozenset()),  # anything
    "pm": (("pm",), frozenset()),  # the package's own __init__
}
UNRESTRICTED = ("pm.cli", "pm.dev")


def layer_of(module: str) -> str:
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import; `from pkg import name` counts as `pkg.name` when that is a
    module of ours, so `from ledger import accounts` is an arrow to ledger.accounts."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).is_dir() or (
                    ROOT / Path(*candidate.split(".")).with_suffix(".py")
                ).is_file()
                found.append((node.lineno, candidate if is_module else node.module))
    return found


def project_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def violations() -> list[str]:
    problems = []
    for path in project_modules():
        source = module_name(path)
        layer = layer_of(source)
        allowed_project, allowed_third = LAYERS[layer]
        for line, target in imported(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: {source} -> {target}"
            if top in PACKAGES:
                target_layer = layer_of(target)
                if target_layer in UNRESTRICTED and layer not in UNRESTRICTED:
                    problems.append(f"{where} (pm.cli and pm.dev are imported only by tests, bench and each other)")
                elif layer not in UNRESTRICTED and not any(
                    target == prefix or target.startswith(prefix + ".") for prefix in allowed_project
                ):
                    problems.append(f"{where} ({layer} may import only {', '.join(allowed_project)})")
            elif top not in STDLIB and layer not in UNRESTRICTED and top not in allowed_third:
                problems.append(f"{where} ({layer} may use only {', '.join(sorted(allowed_third)) or 'no'} libraries)")
    return problems


def test_every_arrow_points_inward() -> None:
    problems = violations()
    assert not problems, "imports outside the allowed arrows:\n" + "\n".join(problems)


@pytest.mark.parametrize("module", ["pm.domain.intent", "pm.store.intents", "ledger.accounts", "gateway.app"])
def test_the_checker_knows_the_layers(module: str) -> None:
    assert layer_of(module) in LAYERS


def test_the_checker_catches_an_arrow_outward(tmp_path: Path) -> None:
    """The checker itself: a domain module importing asyncpg, or a channel importing the gateway, is named."""
    domain = ROOT / "pm" / "domain" / "_layers_probe.py"
    domain.write_text("import asyncpg\nfrom gateway import app\n")
    try:
        found = [problem for problem in violations() if "_layers_probe" in problem]
    finally:
        domain.unlink()
    assert len(found) == 2, found
    assert "pm.domain may use only" in found[0] and "pm.domain may import only" in found[1]


def test_the_ledger_and_the_core_agree_on_currencies_and_derived_ids() -> None:
    """The ledger package knows nothing of PM, so the core keeps its own currency table and v5 derivation:
    they must be the ledger's exactly."""
    import uuid

    from ledger.accounts import ACCOUNT_NAMESPACE, CURRENCY_LEDGER
    from ledger.accounts import uuid5_int as ledger_uuid5_int
    from pm.domain.ids import uuid5_int
    from pm.domain.money import CURRENCIES

    assert CURRENCIES == CURRENCY_LEDGER
    for name in ("transit:THB", "user:42:THB", "", "ü"):
        expected = uuid.uuid5(ACCOUNT_NAMESPACE, name).int
        assert uuid5_int(name, ACCOUNT_NAMESPACE.bytes) == ledger_uuid5_int(name) == expected
