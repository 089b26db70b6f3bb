"""What the fuzzer (test_gateway_fuzz.py) found, kept as plain tests on the real gateway: every answer the
gateway's middlewares give before a view runs is in the document for every operation it can reach — a
malformed X-User-Id (400, found on the admin endpoints, whose operator header is optional), a key over its
rate (429) — so a client generated from /openapi.json knows each of them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.openapi import openapi_document
from pm.store.keys import SCOPE_ADMIN
from tests.support.gateway import Gateway, new_user


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every signed operation."""
    return [
        (method.upper(), path, described)
        for path, methods in openapi_document()["paths"].items()
        for method, described in methods.items()
        if described["security"]
    ]


def _concrete(path: str) -> str:
    """Every path parameter ({id}, {merchant_id}, ...) as 1."""
    return re.sub(r"\{[a-z_]+\}", "1", path)


def _has_user_header(described: dict[str, Any]) -> bool:
    return any(parameter["name"] == "X-User-Id" for parameter in described.get("parameters", ()))


@pytest.mark.parametrize(
    ("method", "path", "described"),
    [operation for operation in _operations() if _has_user_header(operation[2])],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_a_malformed_user_id_is_a_documented_400(
    gateway: Gateway, method: str, path: str, described: dict[str, Any]
) -> None:
    # The fuzzer's case: `X-User-Id: {}` on DELETE /admin/limit-rules/1 answered 400, which the admin
    # endpoints did not document.
    key = await gateway.key(SCOPE_ADMIN)
    body = b"{}" if "requestBody" in described else b""
    response = await gateway.send(
        method, _concrete(path), key=key, body=body, user_id="{}", idempotency_key="fuzz-found-1",
        headers={"Content-Type": "application/json"} if body else None,
    )  # fmt: skip
    assert str(response.status) in described["responses"], (response.status, await response.text())
    # Where the header is the first thing the view reads: not an admin read (no operator recorded: it is
    # ignored), not behind a body's validation.
    if not body and (method == "DELETE" or not path.startswith("/admin/")):
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("method", "path", "described"), _operations(), ids=lambda value: value if isinstance(value, str) else ""
)
async def test_a_key_over_its_rate_gets_a_documented_429(
    gateway: Gateway, method: str, path: str, described: dict[str, Any]
) -> None:
    key = await gateway.key(SCOPE_ADMIN, requests_per_s=1)
    user = new_user()
    await gateway.send("GET", "/api/pm/balance", key=key, user_id=user)  # the key's one token
    body = json.dumps({}).encode() if "requestBody" in described else b""
    response = await gateway.send(method, _concrete(path), key=key, body=body, user_id=user, idempotency_key="k-1")
    assert response.status == 429
    documented = described["responses"]["429"]
    assert "Retry-After" in documented["headers"] and int(response.headers["Retry-After"]) >= 1
