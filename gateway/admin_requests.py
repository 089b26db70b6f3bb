"""What every admin view does with a request: who acts, which row, which body.

actor = actor_of(request)                       # the API key id, and X-User-Id as the operator
rule_id = path_id(request)                      # 404 unless a positive bigint
body = await parse_body(request, LimitRuleBody) # 400 not JSON, 422 not the model (unknown fields too)
"""

from __future__ import annotations

import re
from typing import TypeVar

import pydantic
from aiohttp import web

from gateway.auth import acting_user
from gateway.errors import ApiError, not_found
from gateway.models import BIGINT_MAX, parse_model
from gateway.resources import API_KEY
from pm.domain.intent import ErrorCode
from pm.store.audit import Actor

ID_PATTERN = re.compile(r"[1-9][0-9]{0,18}")

Body = TypeVar("Body", bound=pydantic.BaseModel)


def actor_of(request: web.Request) -> Actor:
    return Actor(api_key_id=request[API_KEY].key_id, operator_id=acting_user(request, required=False))


def path_id(request: web.Request) -> int:
    """The `{id}` of the path; anything but a positive bigint names no row (404, like a missing one)."""
    text = request.match_info["id"]
    if not ID_PATTERN.fullmatch(text) or int(text) > BIGINT_MAX:
        raise not_found()
    return int(text)


async def parse_body(request: web.Request, model: type[Body]) -> Body:
    return parse_model(await request.read(), model)


def conflict(message: str) -> ApiError:
    return ApiError(409, ErrorCode.CONFLICT, message)
