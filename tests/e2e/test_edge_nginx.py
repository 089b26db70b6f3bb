"""The app's path to PM through Debian's nginx with the shipped ops/nginx/pm.conf, `pm run edge-auth`
(RS256 JWTs) and the fleet as processes: a valid token reads its own balance and history and follows its
intent's events as they happen (nginx buffers nothing); an expired, forged or foreign token is 401 and
never reaches PM; a client's own X-User-Id / X-PM-* headers are ignored; a user cannot read another's
intent (404); nothing but PM's reads for the app reaches PM; a user grants and revokes a merchant's
allowance and confirms a mini-app charge through nginx with their JWT (another user's JWT: 404), and
the money is exact in the ledger.
Skipped, with the reason in the summary, only where nginx is not installed (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from pm.client import PMClient
from pm.dev.fleet import Fleet
from pm.domain import signing
from pm.store import intents as store
from pm.store import keys
from tests.support import nginx
from tests.support.fleet import RunningFleet, free_port, psp_sim_environment, running_fleet

NGINX = nginx.nginx_binary()
NO_NGINX = "nginx is not installed: apt-get install nginx-light (.ci/run installs it where apt-get works)"
needs_nginx = pytest.mark.skipif(NGINX is None, reason=NO_NGINX)

PM = str(Path(sys.executable).parent / "pm")
ISSUER = "https://auth.onewallet.test"
AUDIENCE = "onewallet-pm"
EDGE_SCOPES = "intents:read,balance:read,consent:write"
# The simulator holds every payout this long before its success callback: the intent waits in AUTHORIZED,
# so its first events must come through nginx while its stream is still open.
SIM_DELAY_MS = 3_000
READY_TIMEOUT_S = 30.0
EVENTS_TIMEOUT_S = 60.0
# Routes PM serves whatever the edge does: health probes, metrics scrapes and the simulator's callbacks.
NOT_THE_EDGES = frozenset({"/metrics", "/healthz", "/readyz", "/psp/{channel}/callback"})

_users = iter(range(1_300_000, 1_400_000))


@dataclass
class Edge:
    fleet: RunningFleet
    nginx: nginx.RunningNginx
    session: aiohttp.ClientSession
    jwt_key: rsa.RSAPrivateKey
    key_id: str  # the edge's API key, which edge-auth signs with
    key_secret: str

    def token(self, user_id: int | str, key: Any = None, algorithm: str = "RS256", **overrides: Any) -> str:
        now = int(time.time())
        claims = {"sub": str(user_id), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **overrides}
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, key or self.jwt_key, algorithm=algorithm)

    async def get(self, path: str, token: str | None = None, **headers: str) -> tuple[int, Any]:
        """GET through nginx with the path sent exactly as written; (status, JSON body or text)."""
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.send("GET", path, headers)

    async def send(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        url = URL(self.nginx.url + path, encoded=True)
        async with self.session.request(method, url, headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def pm_requests(self) -> int:
        """Requests PM's gateway has answered, but for those that do not come through the edge."""
        async with self.session.get(f"{self.fleet.base_url}/metrics") as response:
            exposition = await response.text()
        return sum(
            int(sample.value)
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name == "pm_http_requests_total" and sample.labels["route"] not in NOT_THE_EDGES
        )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


async def _wait_answering(url: str, stand_ins: Fleet) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if not stand_ins.alive("edge-auth"):
                raise AssertionError(f"edge-auth died:\n{stand_ins.logs('edge-auth')[-4000:]}")
            await asyncio.sleep(0.1)
    raise AssertionError(f"edge-auth did not answer within {READY_TIMEOUT_S} s:\n{stand_ins.logs('edge-auth')[-4000:]}")


@pytest.fixture(scope="module")
async def edge(fresh_database, redis_url, tmp_path_factory) -> AsyncIterator[Edge]:
    if NGINX is None:
        pytest.skip(NO_NGINX)
    sim_environment = psp_sim_environment(free_port(), SIM_DELAY_MS, hold_timeout_s=60, outcome_deadline_s=30)
    counts = {"psp-sim": 1, "ipps-connector": 1}
    async with running_fleet(fresh_database, redis_url, counts, sim_environment) as fleet:
        directory = tmp_path_factory.mktemp("edge")
        jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (directory / "jwt.pem").write_bytes(public_pem(jwt_key))
        # The edge's key, as the README says to make it: reads only, no operation types.
        edge_key, edge_secret = await keys.create_key(fleet.pool, "e2e-edge", EDGE_SCOPES, operations="none")
        auth_port = free_port()
        stand_ins = Fleet(
            environment={
                "PM_EDGE_AUTH_PORT": str(auth_port),
                "PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE": str(directory / "jwt.pem"),
                "PM_EDGE_AUTH_JWT_ISSUER": ISSUER,
                "PM_EDGE_AUTH_JWT_AUDIENCE": AUDIENCE,
                "PM_EDGE_AUTH_KEY_ID": edge_key.key_id,
                "PM_EDGE_AUTH_KEY_SECRET": edge_secret,
                "PM_LOG_LEVEL": "WARNING",
            },
            log_dir=directory,
        )
        try:
            stand_ins.start("edge-auth", command="pm run edge-auth")
            await _wait_answering(f"http://127.0.0.1:{auth_port}/healthz", stand_ins)
            gateway_port = URL(fleet.base_url).port
            assert gateway_port is not None
            ports = {"gateway_port": gateway_port, "auth_port": auth_port}
            with nginx.running_nginx(NGINX, directory / "nginx", **ports) as server:
                async with aiohttp.ClientSession() as session:
                    yield Edge(fleet, server, session, jwt_key, edge_key.key_id, edge_secret)
        finally:
            await asyncio.to_thread(stand_ins.stop)


async def funded_user(edge: Edge, *amounts_minor: int) -> int:
    user = next(_users)
    intents = [await edge.fleet.fund(user, amount) for amount in amounts_minor]
    await edge.fleet.wait_finished([intent["id"] for intent in intents])  # their history rows are written
    return user


async def assert_the_ledger_is_clean(fleet: RunningFleet) -> None:
    report = await fleet.check()
    assert report.ok, report.problems
    assert [transit.posted_net for transit in report.transit] == [0]
    assert (await fleet.reconcile()).mismatches == []


# -- the shipped file, and edge-auth's configuration -----------------------------------------------


@needs_nginx
def test_nginx_accepts_the_shipped_config(tmp_path: Path) -> None:
    assert NGINX is not None
    shipped = nginx.EDGE_CONFIG_FILE.read_text()
    templated = nginx.edge_config(shipped, gateway_port=18080, auth_port=18095, listen_port=18000)
    for name, text in (("shipped", shipped), ("templated", templated)):
        checked = nginx.check_config(NGINX, tmp_path / name, text)
        assert checked.returncode == 0, checked.stderr
        assert "test is successful" in checked.stderr


def test_pm_run_edge_auth_refuses_to_start_unconfigured(tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PM_EDGE_AUTH_")}
    rest = {
        "PM_EDGE_AUTH_JWT_ISSUER": ISSUER, "PM_EDGE_AUTH_JWT_AUDIENCE": AUDIENCE,
        "PM_EDGE_AUTH_KEY_ID": "pmk_edgetest", "PM_EDGE_AUTH_KEY_SECRET": "edge-test-secret",
    }  # fmt: skip
    for extra, named in (
        ({}, "PM_EDGE_AUTH_JWT_HS256_SECRET"),
        ({"PM_EDGE_AUTH_JWT_HS256_SECRET": "s" * 40}, "PM_EDGE_AUTH_JWT_ISSUER"),
        ({**rest, "PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE": str(tmp_path / "none.pem")}, "PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE"),
        ({**rest, "PM_EDGE_AUTH_JWT_HS256_SECRET": "short"}, "PM_EDGE_AUTH_JWT_HS256_SECRET: String should have"),
    ):
        started = subprocess.run(
            [PM, "run", "edge-auth"], env={**environment, **extra}, capture_output=True, text=True, timeout=60
        )
        assert started.returncode == 2, started.stderr
        assert named in started.stderr


# -- through nginx ---------------------------------------------------------------------------------


@needs_nginx
async def test_a_valid_token_reads_its_own_balance_and_history(edge: Edge) -> None:
    user = await funded_user(edge, 70_000, 30_000)
    token = edge.token(user)
    status, balance = await edge.get("/api/pm/balance", token)
    assert status == 200, balance
    assert balance == {"currency": "THB", "available_minor": 100_000, "pending_minor": 0, "posted_minor": 100_000}
    assert balance == await edge.fleet.app.balance(user_id=user)  # what PM answers its own signed caller
    assert (await edge.get("/api/pm/balance?currency=USD", token))[1]["available_minor"] == 0

    status, history = await edge.get("/api/pm/history", token)
    assert status == 200, history
    assert [(item["amount_minor"], item["direction"]) for item in history["items"]] == [
        (30_000, "CREDIT"),
        (70_000, "CREDIT"),
    ]
    assert history == await edge.fleet.app.history(user_id=user)
    # A query goes through as the client wrote it (edge-auth signs $request_uri): pages, then their cursor.
    status, first = await edge.get("/api/pm/history?limit=1", token)
    assert status == 200 and [item["amount_minor"] for item in first["items"]] == [30_000], first
    status, second = await edge.get(f"/api/pm/history?cursor={first['next_cursor']}&limit=1", token)
    assert status == 200 and [item["amount_minor"] for item in second["items"]] == [70_000], second
    assert second["next_cursor"] is None


async def read_events(edge: Edge, intent_id: str, token: str, **headers: str) -> list[tuple[float, dict[str, Any]]]:
    """The intent's events through nginx, each with the time it arrived, until PM ends the stream."""
    url = URL(f"{edge.nginx.url}/intents/{intent_id}/events", encoded=True)
    arrived: list[tuple[float, dict[str, Any]]] = []
    request_headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", **headers}
    timeout = aiohttp.ClientTimeout(total=EVENTS_TIMEOUT_S)
    async with edge.session.get(url, headers=request_headers, timeout=timeout) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                arrived.append((time.time(), json.loads(line.removeprefix("data:"))))
    return arrived


@needs_nginx
async def test_a_user_follows_its_intent_through_nginx_as_it_happens(edge: Edge) -> None:
    user = await funded_user(edge, 100_000)
    token = edge.token(user)
    # A withdrawal (the simulator pays it SIM_DELAY_MS after its submit), posted as the Auth Center would.
    intent = await edge.fleet.app.create_intent(
        operation_type="IPPS_WITHDRAWAL", amount_minor=20_000, currency="THB", user_id=user, destination_ref="tok_edge"
    )
    arrived = await read_events(edge, intent["id"], token)
    recorded = await store.events_since(edge.fleet.pool, uuid.UUID(intent["id"]), 0)
    assert [event["version"] for _, event in arrived] == [event.version for event in recorded]
    assert [event["state"] for _, event in arrived] == [event.state for event in recorded]
    assert arrived[-1][1]["state"] == "SETTLED"
    # Nothing held back: the AUTHORIZED event reached the client before the intent even settled in
    # PostgreSQL, so while its stream was open. (Measured: pm.conf with proxy_buffering on and gzip of
    # text/event-stream delivers every event at the stream's end, and this assertion fails.)
    authorized_at_s = next(at for at, event in arrived if event["state"] == "AUTHORIZED")
    settled = next(event for event in recorded if event.state == "SETTLED")
    assert settled.created_at is not None
    assert authorized_at_s < settled.created_at.timestamp(), (authorized_at_s, settled.created_at)

    # Last-Event-ID passes the edge: a reconnect gets only what came after it.
    resumed = await read_events(edge, intent["id"], edge.token(user), **{"Last-Event-ID": "3"})
    assert [event["version"] for _, event in resumed] == [event.version for event in recorded][3:]
    status, current = await edge.get(f"/intents/{intent['id']}", token)
    assert (status, current["state"], current["sender_id"]) == (200, "SETTLED", user)
    status, balance = await edge.get("/api/pm/balance", token)
    assert (status, balance["available_minor"], balance["pending_minor"]) == (200, 80_000, 0)
    await edge.fleet.wait_finished([intent["id"]])
    assert await edge.fleet.balance(user) == (80_000, 0)
    await assert_the_ledger_is_clean(edge.fleet)


def bad_tokens(edge: Edge, user: int) -> dict[str, str | None]:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = edge.token(user)
    header, payload, signature_part = good.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["sub"] = str(user + 1)
    tampered = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    now = int(time.time())
    return {
        "none": None,
        "expired": edge.token(user, exp=now - 120, iat=now - 600),
        "another key": edge.token(user, key=other_key),
        "HS256": edge.token(user, key="a-secret-the-edge-does-not-have-0123456789", algorithm="HS256"),
        "alg none": jwt.encode({"sub": str(user), "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}, None, "none"),
        "another issuer": edge.token(user, iss="https://elsewhere.test"),
        "another audience": edge.token(user, aud="another-service"),
        "no expiry": edge.token(user, exp=None),
        "a changed sub": f"{header}.{tampered}.{signature_part}",
        "not a user": edge.token("alice"),
    }


@needs_nginx
async def test_an_expired_or_forged_token_is_401_and_never_reaches_pm(edge: Edge) -> None:
    user = await funded_user(edge, 10_000)
    intent = await edge.fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=1_000, currency="THB", user_id=user,
        recipient_id=next(_users), wait_s=10,
    )  # fmt: skip
    paths = (
        "/api/pm/balance",
        "/api/pm/history?limit=5",
        f"/intents/{intent['id']}",
        f"/intents/{intent['id']}/events",
    )
    before = await edge.pm_requests()
    for name, token in bad_tokens(edge, user).items():
        for path in paths:
            status, body = await edge.get(path, token)
            assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED"), (name, path, body)
    # A client's own complete PM signature (even one made with the edge's own key) is no token either.
    forged = signing.sign_headers(
        key_id=edge.key_id, secret=edge.key_secret, method="GET", path="/api/pm/balance",
        user_id=user,
    )  # fmt: skip
    assert (await edge.get("/api/pm/balance", **forged))[0] == 401
    assert await edge.pm_requests() == before
    # The same reads with a valid token do reach PM: the count above can move.
    for path in paths:
        status, body = await edge.get(path, edge.token(user))
        assert status == 200, (path, body)
    assert await edge.pm_requests() == before + len(paths)


@needs_nginx
async def test_a_client_set_user_id_or_signature_is_ignored(edge: Edge) -> None:
    user, other = await funded_user(edge, 11_000), await funded_user(edge, 22_000)
    # Another user's identity, and a PM signature for it made with the edge's own key: nginx drops them all.
    forged = signing.sign_headers(
        key_id=edge.key_id, secret=edge.key_secret, method="GET", path="/api/pm/balance",
        user_id=other,
    )  # fmt: skip
    for headers in (
        {"X-User-Id": str(other)},
        {"x-user-id": str(other)},
        {"X_User_Id": str(other)},
        forged,
        {**forged, "Idempotency-Key": "client-key", "X-Original-URI": "/api/pm/history"},
    ):
        status, balance = await edge.get("/api/pm/balance", edge.token(user), **headers)
        assert (status, balance["available_minor"]) == (200, 11_000), (headers, balance)
    status, history = await edge.get("/api/pm/history", edge.token(user), **{"X-User-Id": str(other)})
    assert status == 200 and [item["amount_minor"] for item in history["items"]] == [11_000]


@needs_nginx
async def test_a_user_cannot_read_another_users_intent(edge: Edge) -> None:
    sender, recipient, stranger = await funded_user(edge, 5_000), next(_users), next(_users)
    intent = await edge.fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=2_000, currency="THB", user_id=sender, recipient_id=recipient,
        wait_s=10,
    )  # fmt: skip
    assert intent["state"] == "SETTLED"
    for path in (f"/intents/{intent['id']}", f"/intents/{intent['id']}/events"):
        status, body = await edge.get(path, edge.token(stranger))
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND"), (path, body)
        # Not even by claiming to be the sender beside its own token.
        status, body = await edge.get(path, edge.token(stranger), **{"X-User-Id": str(sender)})
        assert status == 404, (path, body)
    for party in (sender, recipient):
        status, body = await edge.get(f"/intents/{intent['id']}", edge.token(party))
        assert (status, body["id"]) == (200, intent["id"])
    assert (await edge.get(f"/intents/{uuid.uuid4()}", edge.token(sender)))[0] == 404
    await edge.fleet.wait_finished([intent["id"]])
    assert await edge.fleet.balance(sender) == (3_000, 0)
    assert await edge.fleet.balance(recipient) == (2_000, 0)
    await assert_the_ledger_is_clean(edge.fleet)


@needs_nginx
async def test_nothing_but_pms_reads_for_the_app_reaches_pm(edge: Edge) -> None:
    user = await funded_user(edge, 1_000)
    token = edge.token(user)
    before = await edge.pm_requests()
    authorization = {"Authorization": f"Bearer {token}"}
    # Writes to PM's read routes: refused by nginx before any auth subrequest.
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        status, _ = await edge.send(method, "/api/pm/balance", authorization)
        assert status == 405, method
    # Everything else is the Auth Center's (the stand-in answers 404 for all of it): PM's admin routes, its
    # POST /intents, paths that only normalize onto PM's, and a path nginx routes to PM but edge-auth
    # will not sign as written (it signs only canonical paths: 403).
    auth_center = ("/admin/fee-rules", "/admin/audit", "/intents", "/api/pm/../admin/fee-rules", "/metrics", "/")
    for path in auth_center:
        status, body = await edge.get(path, token)
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND"), (path, body)
        assert "Auth Center" in body["error"]["message"], (path, body)
    status, body = await edge.send("POST", "/intents", {**authorization, "Content-Type": "application/json"})
    assert status == 404 and "Auth Center" in body["error"]["message"]
    # The Auth Center's auth_request endpoint is nginx's alone: asked for from outside, nothing is signed.
    for path in ("/auth/pm", "/auth/pm/", "/auth/pm?x=1"):
        for method in ("GET", "POST"):
            headers = {**authorization, "X-Original-Method": "GET", "X-Original-URI": "/api/pm/balance"}
            status, body = await edge.send(method, path, headers)
            assert (status, body["error"]["code"]) == (404, "NOT_FOUND"), (method, path, body)
            assert "Auth Center" not in body["error"]["message"], (method, path, body)
    for path in ("/api/pm//balance", "/api/pm/x/../balance", "/api/pm/%62alance", "/api/pm/other"):
        status, body = await edge.get(path, token)
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN"), (path, body)
    assert await edge.pm_requests() == before
    # Bounds: a header line beyond 8 KiB is refused by nginx itself.
    status, _ = await edge.get("/api/pm/balance", token, **{"X-Padding": "p" * 9_000})
    assert status in (400, 494)
    assert await edge.pm_requests() == before


async def test_a_user_confirms_a_mini_app_charge_and_manages_allowances_through_nginx(edge: Edge) -> None:
    user, stranger, merchant_id = await funded_user(edge, 10_000), next(_users), next(_users)
    merchant_key, merchant_secret = await keys.create_key(
        edge.fleet.pool, "e2e-edge-miniapp", "intents:write,intents:read", merchant_id, "MINIAPP_CHARGE,MINIAPP_CREDIT"
    )
    bearer = {"Authorization": f"Bearer {edge.token(user)}"}
    async with PMClient(edge.fleet.base_url, merchant_key.key_id, merchant_secret) as miniapp:
        waiting = await miniapp.create_intent(
            operation_type="MINIAPP_CHARGE", amount_minor=2_500, currency="THB", user_id=user, wait_s=1
        )
        assert waiting["state"] == "AWAITING_CONFIRMATION"
        path = f"/intents/{waiting['id']}/confirm"
        status, body = await edge.send("POST", path, {"Authorization": f"Bearer {edge.token(stranger)}"})
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
        status, body = await edge.send("GET", path, bearer)  # the confirm is a POST, nothing else
        assert status == 405
        assert (await edge.get("/api/pm/balance", edge.token(user)))[1]["available_minor"] == 10_000
        status, body = await edge.send("POST", path, bearer)
        assert status == 200, body
        assert (await edge.fleet.wait_finished([waiting["id"]]))[waiting["id"]]["state"] == "SETTLED"
        _, balance = await edge.get("/api/pm/balance", edge.token(user))
        assert (balance["available_minor"], balance["pending_minor"]) == (7_500, 0)

        # An allowance granted through the edge (its cap in the query: the edge forwards no body).
        status, body = await edge.send(
            "PUT", f"/api/pm/allowances/{merchant_id}?daily_max_minor=1000&currency=THB", bearer
        )
        assert (status, body["daily_max_minor"]) == (200, 1_000), body
        covered = await miniapp.create_intent(
            operation_type="MINIAPP_CHARGE", amount_minor=1_000, currency="THB", user_id=user, wait_s=10
        )
        assert covered["state"] == "SETTLED"
        status, body = await edge.get("/api/pm/allowances", edge.token(user))
        assert [(i["merchant_id"], i["used_today_minor"]) for i in body["items"]] == [(merchant_id, 1_000)]
        status, body = await edge.send("DELETE", f"/api/pm/allowances/{merchant_id}", bearer)
        assert (status, body) == (200, {"revoked": 1})
    await edge.fleet.wait_finished([covered["id"]])
    _, balance = await edge.get("/api/pm/balance", edge.token(user))
    assert (balance["available_minor"], balance["pending_minor"]) == (6_500, 0)
    await assert_the_ledger_is_clean(edge.fleet)


@needs_nginx
async def test_one_user_flooding_the_edge_is_429_at_nginx_and_others_still_read(edge: Edge) -> None:
    """Every app request reaches PM with the edge's one key, so PM's per-key rate is shared by all users:
    nginx limits each bearer token (20/s, bursts of 40) before the auth subrequest. A flood of one token's
    reads gets 429 RATE_LIMITED with Retry-After from nginx (never reaching PM) while another user reads."""
    flooder, other = await funded_user(edge, 1_000), await funded_user(edge, 2_000)
    url = URL(f"{edge.nginx.url}/api/pm/balance", encoded=True)
    headers = {"Authorization": f"Bearer {edge.token(flooder)}"}

    async def read() -> tuple[int, str | None, str | None]:
        async with edge.session.get(url, headers=headers) as response:
            body = await response.json()
            return response.status, response.headers.get("Retry-After"), (body.get("error") or {}).get("code")

    before = await edge.pm_requests()
    started_s = time.monotonic()
    answers = await asyncio.gather(*(read() for _ in range(150)))
    elapsed_s = time.monotonic() - started_s
    served = sum(1 for status, _, _ in answers if status == 200)
    refused = [answer for answer in answers if answer[0] != 200]
    assert set(refused) == {(429, "1", "RATE_LIMITED")}, set(refused)
    # The burst, the first request, and what the rate refilled while the flood lasted.
    assert 40 <= served <= 41 + int(20 * elapsed_s) + 1, (served, elapsed_s)
    assert await edge.pm_requests() == before + served  # the refused ones never reached PM
    status, balance = await edge.get("/api/pm/balance", edge.token(other))
    assert status == 200 and balance["available_minor"] == 2_000, balance
