"""POST /psp/{channel}/callback: a payment service provider tells us what became of a payment.

Fast and without ledger work (the PSP is waiting): one SQL statement records the event once per
(channel, event id) and reads the intent; one XADD hands the outcome to the settlement stage, which
makes the (compare-and-set) transition. So a duplicate, late or out-of-order callback causes at most
one transition: a repeated event id is answered 200 and dropped, and settlement ignores statuses
that decide nothing (PROCESSING) and intents no longer AUTHORIZED.

The body is read only under a valid `X-PSP-Signature` (the channel's secret, ±300 s); without one the
callback is answered 401 and causes nothing (no database read, no PSP query, no stream entry).
A callback that names another payment than ours (its `amount_minor` and `currency`), or whose outcome
contradicts a final state (a success after we failed the intent, a decline or expiry after it settled),
is flagged for an operator (pm/store/reviews.py) and handed to no stage.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import orjson
from aiohttp import web

import channels
from channels.base import PspChannel
from gateway.errors import ApiError, bad_request, json_response, not_found
from gateway.resources import DATABASE, PSP, REDIS_BATCH, TOPOLOGY
from pm.config.metrics import PSP_CALLBACKS
from pm.domain.intent import ErrorCode, Intent, State
from pm.domain.psp import PspOutcome, PspReport, PspReportMismatch
from pm.redis import streams
from pm.store import reviews
from pm.store.intents import INTENT_COLUMNS, intent_from_row

log = logging.getLogger("pm.gateway.psp")

EVENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
STATUS_PATTERN = re.compile(r"[A-Z_]{1,32}")

# Records the event once and reads the intent it names, in one round trip. An event for an intent we
# do not have is not recorded.
_RECORD_SQL = f"""
WITH recorded AS (
    INSERT INTO pm.psp_event (channel, event_id, intent_id, status)
    SELECT $1, $2, id, $4 FROM pm.intent WHERE id = $3
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM recorded) = 1 AS new_event, {INTENT_COLUMNS} FROM pm.intent WHERE id = $3
"""


async def callback(request: web.Request) -> web.Response:
    channel_name = request.match_info["channel"]
    channel = channels.channel_named(channel_name)
    if not isinstance(channel, PspChannel):  # unknown, or instant: no PSP calls back
        raise not_found()
    body = await request.read()
    app = request.app
    if not app[PSP].callback_signature_ok(channel.provider, request.headers, body):
        # Not the PSP's word, so it causes nothing: no read, no query, no stream entry. An attacker
        # could otherwise make PM ask (or, formerly, pay) a PSP once per forged request; a real PSP's
        # outcome still arrives, through its retries or settlement's own status queries.
        PSP_CALLBACKS.labels(channel_name, "bad_signature").inc()
        log.warning("PSP callback without a valid signature", extra={"channel": channel_name})
        raise ApiError(401, ErrorCode.UNAUTHENTICATED, "bad or missing X-PSP-Signature")
    event = _parse(body)
    intent_id = _reference(event)
    event_id, status = _event_id_and_status(event)
    # The event is recorded (and a late success flagged) in one transaction: should the flag fail, the
    # event is not recorded either, and the PSP's retry is not dropped as a duplicate.
    async with app[DATABASE].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_RECORD_SQL, channel_name, event_id, intent_id, status)
        if row is None:
            PSP_CALLBACKS.labels(channel_name, "unknown_intent").inc()
            raise not_found()
        if not row["new_event"]:
            PSP_CALLBACKS.labels(channel_name, "duplicate").inc()
            return json_response({"received": True, "duplicate": True})
        intent = intent_from_row(row)
        if intent.channel != channel_name:
            PSP_CALLBACKS.labels(channel_name, "wrong_channel").inc()
            raise not_found()
        why = _review_reason(channel, intent, PspReport(status, event.get("amount_minor"), event.get("currency")))
        if why is not None:
            await reviews.flag(conn, [intent.id], why)
    if why is not None:
        # Decides nothing: another payment than ours, or the PSP contradicting a final state. An operator
        # looks (README "Reviews"); a mismatched payment left AUTHORIZED is voided at the deadline.
        log.error("PSP callback flagged for review", extra={"intent_id": str(intent.id), "reason": why})
        PSP_CALLBACKS.labels(channel_name, "flagged_for_review").inc()
    elif intent.state == State.AUTHORIZED:
        # After the commit; if this XADD fails the PSP retries (answered 500) and its event is a duplicate
        # then, but the poller re-drives the AUTHORIZED intent and settlement asks the PSP.
        await _to_settlement(request, intent, status)
        PSP_CALLBACKS.labels(channel_name, "handed_over").inc()
    else:
        PSP_CALLBACKS.labels(channel_name, "no_effect").inc()
    return json_response({"received": True, "duplicate": False})


def _review_reason(channel: PspChannel, intent: Intent, report: PspReport) -> str | None:
    """Why a signed callback needs an operator instead of settlement, or None: it names another payment
    than the one PM asked for (amount, currency: whatever its status), or its outcome contradicts the
    intent's final state (paid after PM failed it: money may have left with the hold released; declined
    or expired after it settled: PM moved money the PSP says it did not)."""
    try:
        channel.check_report(intent, report)
    except PspReportMismatch as exc:
        return str(exc)
    outcome = channel.outcome(report.status)
    if intent.state == State.FAILED and outcome is PspOutcome.SUCCEEDED:
        return f"{channel.name} reported {report.status} after the intent failed"
    if intent.state == State.SETTLED and outcome in (PspOutcome.DECLINED, PspOutcome.EXPIRED):
        return f"{channel.name} reported {report.status} after the intent settled"
    return None


def _parse(body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("the body is not JSON") from None
    if not isinstance(event, dict):
        raise bad_request("the body is not a JSON object")
    return event


def _reference(event: dict[str, Any]) -> uuid.UUID:
    try:
        return uuid.UUID(str(event.get("reference")))
    except ValueError:
        raise bad_request("reference is not one of our payment references") from None


def _event_id_and_status(event: dict[str, Any]) -> tuple[str, str]:
    event_id, status = event.get("event_id"), event.get("status")
    if not isinstance(event_id, str) or not EVENT_ID_PATTERN.fullmatch(event_id):
        raise bad_request("event_id must be 1 to 128 token characters")
    if not isinstance(status, str) or not STATUS_PATTERN.fullmatch(status):
        raise bad_request("status must be an upper-case word")
    return event_id, status


async def _to_settlement(request: web.Request, intent: Intent, psp_status: str) -> None:
    """The intent on the settlement stage's stream, with the (signature-checked) PSP's status."""
    app = request.app
    fields = streams.entry_fields(intent, {**intent.to_message(), "psp_status": psp_status})
    stream = app[TOPOLOGY].stage_for_state(State.AUTHORIZED).stream
    await app[REDIS_BATCH].execute("XADD", stream, "*", *[item for pair in fields.items() for item in pair])
