"""Refunds at the gateway: POST /intents with `operation_type: REFUND` and `refund_of` (issue 13 part 4).

Who may refund what (the key must also list REFUND in its operation types, else 403 OPERATION_NOT_ALLOWED):
- a P2P_TRANSFER: its recipient (X-User-Id), with a user's key; or an admin key;
- a MINIAPP_CHARGE: the key of the merchant it paid (a merchant key lists REFUND: `pm keys create
  --merchant-id N --operations MINIAPP_CHARGE,MINIAPP_CREDIT,REFUND`); or an admin key.
Anyone else gets 404 for the original, as if it did not exist (no existence leak), except its sender, who
may read it and gets 403 FORBIDDEN. Then, with nothing written but the request's nonce (the same bytes,
replayed once the original has changed, are 401): an original that is not a SETTLED
P2P_TRANSFER or MINIAPP_CHARGE (a refund too) is 422 NOT_REFUNDABLE; a currency other than the original's
422 VALIDATION_FAILED; an amount above what is left to refund 422 REFUND_EXCEEDS_ORIGINAL, decided by the
reservation in the refund's creating transaction (pm.store.intents.create_refund), so concurrent refunds
never add up to more than the original.
"""

from __future__ import annotations

import asyncpg

from gateway.auth import forbidden
from gateway.errors import ApiError, bad_request, not_found, validation_failed
from gateway.models import IntentRequest
from pm.domain.intent import REFUNDABLE_OPERATIONS, ErrorCode, Intent, OperationType, State
from pm.domain.parties import Parties, party_refusal_of, refund_parties
from pm.store import intents as store
from pm.store.keys import SCOPE_ADMIN, ApiKey

REFUND = OperationType.REFUND


async def parties(
    pool: asyncpg.Pool, intent_request: IntentRequest, key: ApiKey, user_id: int | None, nonce: str
) -> Parties:
    """The parties of the refund asked for (the original's, swapped), or the refusal. A refusal that
    depends on the original claims the request's `nonce` first (below)."""
    if not key.may_create(REFUND):
        raise ApiError(403, ErrorCode.OPERATION_NOT_ALLOWED, "this key may not create REFUND (pm keys list)")
    if intent_request.refund_of is None:
        raise validation_failed("a REFUND names the intent it refunds (refund_of)")
    if intent_request.recipient_id is not None or intent_request.destination_ref is not None:
        message = "a REFUND takes no recipient_id or destination_ref: it pays back the original's payer"
        raise validation_failed(message, ErrorCode.INVALID_PARTY)
    original = await store.load_intent(pool, intent_request.refund_of)
    try:
        return _parties_of(original, intent_request, key, user_id)
    except ApiError:
        # The answer depends on the original as it is now (not yet SETTLED, say): the same signed bytes,
        # replayed once it has settled, must not become a refund the caller saw refused (as create_refund
        # claims the nonce of a refund refused for its amount).
        await store.claim_nonces(pool, [(key.key_id, nonce)])
        raise


def _parties_of(original: Intent | None, intent_request: IntentRequest, key: ApiKey, user_id: int | None) -> Parties:
    if original is None:
        raise not_found()
    _check_refunder(original, key, user_id)
    if original.operation_type not in REFUNDABLE_OPERATIONS or original.state != State.SETTLED:
        raise validation_failed("only a SETTLED P2P_TRANSFER or MINIAPP_CHARGE is refunded", ErrorCode.NOT_REFUNDABLE)
    if intent_request.currency != original.currency:
        raise validation_failed(f"a refund is in the original's currency, {original.currency}")
    if intent_request.amount_minor > original.amount_minor:
        message = f"a refund is at most the original's amount, {original.amount_minor} minor units"
        raise validation_failed(message, ErrorCode.REFUND_EXCEEDS_ORIGINAL)
    who = refund_parties(original)
    assert party_refusal_of(REFUND, who, None) is None, (original.id, who)
    return who


def _check_refunder(original: Intent, key: ApiKey, user_id: int | None) -> None:
    """404 unless the caller may refund `original` (403 for its sender, who may read it)."""
    if key.merchant_id is not None:
        charged = original.operation_type == OperationType.MINIAPP_CHARGE
        if not (charged and original.merchant_id == key.merchant_id):
            raise not_found()
        return
    if key.allows(SCOPE_ADMIN):
        return
    if user_id is None:
        raise bad_request("X-User-Id (the recipient of the transfer to refund) is required")
    if original.operation_type == OperationType.P2P_TRANSFER and original.recipient_id == user_id:
        return
    if user_id in original.parties():
        raise forbidden("only the recipient of a transfer (or an operator) refunds it")
    raise not_found()


async def create(pool: asyncpg.Pool, new_intent: store.NewIntent) -> store.CreateOutcome:
    """Create the refund with its amount reserved on the original, or 422 with nothing written."""
    try:
        return await store.create_refund(pool, new_intent)
    except store.RefundRefusal as refusal:
        raise validation_failed(refusal.message, refusal.code) from None
