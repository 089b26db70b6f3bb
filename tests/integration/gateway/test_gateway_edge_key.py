"""The nginx edge's API key (README "nginx edge": scopes intents:read,balance:read, operations none; what
`pm run edge-auth` signs with) reads only as the user it names: an intent that user is a party to, 404
for any other (another's, a missing one; its events alike, before any stream starts), 400 with no
X-User-Id (so never "any intent"), and it can create nothing and reach no admin route."""

from __future__ import annotations

import json
import uuid

from pm.store.keys import SCOPE_BALANCE_READ, SCOPE_INTENTS_READ
from tests.support.gateway import Gateway, error_of, new_user, p2p_body


async def test_the_edge_key_reads_an_intent_only_for_a_party(gateway: Gateway) -> None:
    app_key = await gateway.key()
    edge = await gateway.key(SCOPE_INTENTS_READ, SCOPE_BALANCE_READ, operations="none")
    sender, recipient, stranger = new_user(), new_user(), new_user()
    created = await (await gateway.post_intent(app_key, p2p_body(recipient), user_id=sender)).json()
    path = f"/intents/{created['id']}"
    for user in (sender, recipient):
        answer = await gateway.send("GET", path, key=edge, user_id=user)
        assert answer.status == 200 and (await answer.json())["id"] == created["id"]
    for read in (path, f"{path}/events"):
        assert await error_of(await gateway.send("GET", read, key=edge, user_id=stranger)) == (404, "NOT_FOUND")
        # No X-User-Id: refused, never read as "any intent" (only an admin key reads without one).
        assert await error_of(await gateway.send("GET", read, key=edge)) == (400, "BAD_REQUEST")
    missing = f"/intents/{uuid.uuid4()}"
    assert await error_of(await gateway.send("GET", missing, key=edge, user_id=sender)) == (404, "NOT_FOUND")
    for account_read in ("/api/pm/balance", "/api/pm/history"):
        assert (await gateway.send("GET", account_read, key=edge, user_id=stranger)).status == 200
        assert await error_of(await gateway.send("GET", account_read, key=edge)) == (400, "BAD_REQUEST")


async def test_the_edge_key_creates_nothing_and_reaches_no_admin_route(gateway: Gateway) -> None:
    edge = await gateway.key(SCOPE_INTENTS_READ, SCOPE_BALANCE_READ, operations="none")
    sender = new_user()
    created = await gateway.post_intent(edge, p2p_body(new_user()), user_id=sender)
    assert await error_of(created) == (403, "FORBIDDEN")
    quote_body = json.dumps({"operation_type": "P2P_TRANSFER", "amount_minor": 10_000, "currency": "THB"}).encode()
    quoted = await gateway.send("POST", "/quote", key=edge, body=quote_body, user_id=sender)
    assert await error_of(quoted) == (403, "FORBIDDEN")
    for method, admin_path in (("GET", "/admin/fee-rules"), ("GET", "/admin/audit"), ("GET", "/admin/limit-rules")):
        assert await error_of(await gateway.send(method, admin_path, key=edge, user_id=sender)) == (403, "FORBIDDEN")
    assert await gateway.writes_by(edge) == (0, 0)
