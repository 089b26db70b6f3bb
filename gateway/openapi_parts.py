"""The pieces every part of the OpenAPI document is built from (gateway/openapi.py, openapi_fees.py,
admin_api.py), defined once so the parts cannot describe signing, ids or errors differently."""

from __future__ import annotations

from typing import Any

SCHEMAS = "#/components/schemas/"
SIGNED = [{"keyId": [], "timestamp": [], "nonce": [], "signature": []}]
POSITIVE_ID = {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"}  # a positive bigint, as text
ROW_ID = {"name": "id", "in": "path", "required": True, "schema": POSITIVE_ID}


def ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(reasons: dict[int, str], *statuses: int) -> dict[str, Any]:
    """An Error response per status, described by the part's own `reasons`."""
    return {str(status): json_content(ref("Error"), reasons[status]) for status in statuses}


def header(name: str, description: str, *, required: bool, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def query(name: str, schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """An optional query parameter."""
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    return parameter if description is None else {**parameter, "description": description}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {**json_content({"$ref": SCHEMAS + "Error"}, description), **extra}


_RETRY_AFTER = {"Retry-After": {"description": "whole seconds to wait", "schema": {"type": "string"}}}
# What the gateway's middlewares may answer before a view runs (gateway/body.py, gateway/auth.py,
# gateway/errors.py), and so what every operation of a kind may answer: `operation` adds each one an
# operation's part did not describe in its own words, so the document cannot miss one.
SIGNED_ANSWERS = {
    "401": _error("missing or bad signature, unknown or revoked key, stale timestamp, reused nonce"),
    "429": _error(
        "RATE_LIMITED: the key sent more than its rate (requests per second, `pm keys create --rate`); nothing "
        "was done and the nonce was not used, so the same request may be sent again after Retry-After",
        headers=_RETRY_AFTER,
    ),
    "503": _error("UNAVAILABLE: a dependency (PostgreSQL, Redis, the ledger) is unavailable; see Retry-After"),
}
BODY_ANSWERS = {
    "400": _error("BAD_REQUEST: the body is not what the operation reads (e.g. not JSON)"),
    "408": _error("REQUEST_TIMEOUT: the body did not arrive within PM_REQUEST_BODY_TIMEOUT_MS; the connection closes"),
    "413": _error("PAYLOAD_TOO_LARGE: the body is larger than PM_HTTP_BODY_BYTES_MAX"),
}
USER_HEADER_ANSWERS = {
    "400": _error("BAD_REQUEST: X-User-Id is not a positive integer (or is missing, where required)")
}


def operation(summary: str, scope: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An operation; `scope` None: unsigned (health, metrics, this document). A signed operation may
    also answer 401, 429 and 503, one with a body 400, 408 and 413, one with an X-User-Id header 400
    (SIGNED_ANSWERS, ...): added here, unless the part describes them itself."""
    security: dict[str, Any] = {"security": []} if scope is None else {"security": SIGNED, "x-pm-scope": scope}
    answers = dict(responses)
    implied: dict[str, Any] = {}
    if scope is not None:
        implied |= SIGNED_ANSWERS
    if "requestBody" in extra:
        implied |= BODY_ANSWERS
    if any(parameter.get("name") == "X-User-Id" for parameter in extra.get("parameters", ())):
        implied |= USER_HEADER_ANSWERS
    for status, answer in implied.items():
        answers.setdefault(status, answer)
    return {"summary": summary, "responses": answers, **extra, **security}


OPERATOR_HEADER = header(
    "X-User-Id",
    "the operator, recorded in the audit trail (a positive integer), part of the signature",
    required=False,
    schema=POSITIVE_ID,
)
