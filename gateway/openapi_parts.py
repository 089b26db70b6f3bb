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


RATE_LIMITED = {
    **json_content(
        {"$ref": SCHEMAS + "Error"},
        "RATE_LIMITED: the key sent more than its rate (requests per second, `pm keys create --rate`); "
        "nothing was done and the nonce was not used, so the same request may be sent again after Retry-After",
    ),
    "headers": {"Retry-After": {"description": "whole seconds to wait", "schema": {"type": "string"}}},
}
BODY_TIMEOUT = json_content(
    {"$ref": SCHEMAS + "Error"},
    "REQUEST_TIMEOUT: the body did not arrive within PM_REQUEST_BODY_TIMEOUT_MS; the connection is closed",
)


def operation(summary: str, scope: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An operation; `scope` None: unsigned (health, metrics, this document). Every signed operation may
    answer 429 (its key's rate), every one with a body 408 (a body too slow): added here, for all."""
    security: dict[str, Any] = {"security": []} if scope is None else {"security": SIGNED, "x-pm-scope": scope}
    answers = dict(responses)
    if scope is not None:
        answers["429"] = RATE_LIMITED
    if "requestBody" in extra:
        answers["408"] = BODY_TIMEOUT
    return {"summary": summary, "responses": answers, **extra, **security}


OPERATOR_HEADER = header(
    "X-User-Id",
    "the operator, recorded in the audit trail (a positive integer), part of the signature",
    required=False,
    schema=POSITIVE_ID,
)
