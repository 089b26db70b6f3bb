"""The development Auth Center's auth_request endpoint (pm/dev/edge_auth.py): a valid HS256 or RS256 JWT
gets headers the gateway's own check accepts for exactly the original GET and URI; an expired, forged,
foreign or malformed token is 401 with nothing signed, the algorithm is the configuration's and never the
token's, only PM's four reads for the app are signed (else 403), and a configuration that cannot work
is refused before the edge listens."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pm.config.settings import Settings
from pm.dev import edge_auth
from pm.dev.edge_auth import EdgeAuthConfigError, Refused
from pm.domain import signing

HS256_SECRET = "edge-test-hs256-secret-0123456789abcdef"
ISSUER = "https://auth.onewallet.test"
AUDIENCE = "onewallet-pm"
KEY_ID = "pmk_edgetest"
KEY_SECRET = "edge-test-key-secret-0123456789"
INTENT_ID = "0b1e2f3a-4c5d-4e6f-8a9b-0c1d2e3f4a5b"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    document = {"sub": "4242", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    document.update(overrides)
    return {name: value for name, value in document.items() if value is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), HS256_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "edge_auth_jwt_hs256_secret": HS256_SECRET,
        "edge_auth_jwt_issuer": ISSUER,
        "edge_auth_jwt_audience": AUDIENCE,
        "edge_auth_key_id": KEY_ID,
        "edge_auth_key_secret": KEY_SECRET,
    }
    values.update(overrides)
    return Settings(**{name: value for name, value in values.items() if value is not None})


@pytest.fixture(scope="module")
def hs256_config() -> edge_auth.EdgeAuthConfig:
    return edge_auth.config_from(settings())


@pytest.fixture(scope="module")
def rs256_config(rsa_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory) -> edge_auth.EdgeAuthConfig:
    key_file = tmp_path_factory.mktemp("edge") / "jwt.pem"
    key_file.write_bytes(public_pem(rsa_key))
    return edge_auth.config_from(settings(edge_auth_jwt_hs256_secret=None, edge_auth_jwt_public_key_file=key_file))


def subrequest(token: str | None, uri: str = "/api/pm/balance", method: str = "GET") -> dict[str, str]:
    """The headers nginx's auth subrequest carries (ops/nginx/pm.conf)."""
    headers = {edge_auth.HEADER_ORIGINAL_METHOD: method, edge_auth.HEADER_ORIGINAL_URI: uri}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def gateway_accepts(signed: dict[str, str], method: str, uri: str, secret: str = KEY_SECRET) -> bool:
    """The gateway's own check (gateway/auth.py) of a request carrying `signed`, as PM receives it."""
    path, _, raw_query = uri.partition("?")
    canonical = signing.canonical_string(
        timestamp=signed[signing.HEADER_TIMESTAMP],
        nonce=signed[signing.HEADER_NONCE],
        method=method,
        path=path,
        raw_query=raw_query,
        user_id=signed[signing.HEADER_USER_ID],
        idempotency_key="",
        body=b"",
    )
    return signing.signature_matches([secret], canonical, signed[signing.HEADER_SIGNATURE])


@pytest.mark.parametrize(
    "uri",
    [
        "/api/pm/balance",
        "/api/pm/balance?currency=USD",
        "/api/pm/history?limit=5&cursor=MjAyNi0xMi0wM1QxNzoxMDowMCswMDowMHww",
        f"/intents/{INTENT_ID}",
        f"/intents/{INTENT_ID}/events?after_version=3",
    ],
)
def test_a_valid_token_gets_headers_the_gateway_accepts_for_that_uri(hs256_config, uri: str) -> None:
    signed = edge_auth.signed_headers(hs256_config, subrequest(hs256(), uri))
    assert signed[signing.HEADER_USER_ID] == "4242"
    assert signed[signing.HEADER_KEY_ID] == KEY_ID
    assert signing.timestamp_fresh(signed[signing.HEADER_TIMESTAMP])
    assert gateway_accepts(signed, "GET", uri)
    # Bound to this read: another URI, method, user or key secret does not verify.
    assert not gateway_accepts(signed, "GET", "/api/pm/history")
    assert not gateway_accepts(signed, "POST", uri)
    assert not gateway_accepts({**signed, signing.HEADER_USER_ID: "4243"}, "GET", uri)
    assert not gateway_accepts(signed, "GET", uri, secret="another-secret-of-another-key")


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("GET", "/api/pm/allowances"),
        ("POST", f"/intents/{INTENT_ID}/confirm"),
        ("PUT", "/api/pm/allowances/77?daily_max_minor=5000&currency=THB"),
        ("DELETE", "/api/pm/allowances/77"),
    ],
)
def test_the_consent_routes_are_signed_for_their_method_only(hs256_config, method: str, uri: str) -> None:
    signed = edge_auth.signed_headers(hs256_config, subrequest(hs256(), uri, method))
    assert signed[signing.HEADER_USER_ID] == "4242"
    assert gateway_accepts(signed, method, uri)
    assert not gateway_accepts(signed, "GET" if method != "GET" else "POST", uri)


def test_every_answer_has_a_new_nonce(hs256_config) -> None:
    nonces = {edge_auth.signed_headers(hs256_config, subrequest(hs256()))[signing.HEADER_NONCE] for _ in range(20)}
    assert len(nonces) == 20


def test_an_rs256_token_is_accepted_with_the_public_key(rs256_config, rsa_key) -> None:
    token = jwt.encode(claims(sub="77"), rsa_key, algorithm="RS256")
    signed = edge_auth.signed_headers(rs256_config, subrequest(token, f"/intents/{INTENT_ID}"))
    assert signed[signing.HEADER_USER_ID] == "77"
    assert gateway_accepts(signed, "GET", f"/intents/{INTENT_ID}")


@dataclass(frozen=True)
class FromNow:
    """A time claim this many seconds from when the test runs (not from collection: a worker of pytest-xdist
    may run a test many minutes after collecting it)."""

    seconds: int


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": FromNow(-60)}, "the token has expired"),
        ({"iss": "https://someone-else.test"}, "invalid token"),
        ({"aud": "another-service"}, "invalid token"),
        ({"exp": None}, "invalid token"),
        ({"iss": None}, "invalid token"),
        ({"aud": None}, "invalid token"),
        ({"sub": None}, "invalid token"),
        ({"nbf": FromNow(600)}, "invalid token"),
        ({"sub": "0"}, "not a user id"),
        ({"sub": "042"}, "not a user id"),
        ({"sub": "-5"}, "not a user id"),
        ({"sub": "4242 "}, "not a user id"),
        ({"sub": "9223372036854775808"}, "not a user id"),  # beyond a bigint
        ({"sub": "alice"}, "not a user id"),
    ],
)
def test_a_token_that_is_not_valid_is_401(hs256_config, overrides: dict[str, Any], reason: str) -> None:
    now_s = int(time.time())
    overrides = {
        name: now_s + value.seconds if isinstance(value, FromNow) else value for name, value in overrides.items()
    }
    with pytest.raises(Refused) as refused:
        edge_auth.signed_headers(hs256_config, subrequest(hs256(**overrides)))
    assert refused.value.status == 401
    assert reason in refused.value.message


def test_a_token_expired_within_the_leeway_still_counts(hs256_config) -> None:
    leeway_s = hs256_config.policy.leeway_s
    assert leeway_s == 10  # the default
    signed = edge_auth.signed_headers(hs256_config, subrequest(hs256(exp=int(time.time()) - leeway_s + 3)))
    assert signed[signing.HEADER_USER_ID] == "4242"


def forged_tokens(rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = hs256()
    header, payload, signature_part = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(jwt.utils.base64url_decode(payload).replace(b"4242", b"4243"))
    return {
        "another HS256 secret": jwt.encode(claims(), "not-the-edge-secret-0123456789abcdef", algorithm="HS256"),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "another RSA key": jwt.encode(claims(), other_rsa, algorithm="RS256"),
        "our RSA key, but the edge is HS256": jwt.encode(claims(), rsa_key, algorithm="RS256"),
        "a changed sub": f"{header}.{tampered_payload.decode()}.{signature_part}",
        "no signature": f"{header}.{payload}.",
        "garbage": "not.a.token",
    }


def test_a_forged_token_is_401(hs256_config, rsa_key) -> None:
    for name, token in forged_tokens(rsa_key).items():
        with pytest.raises(Refused) as refused:
            edge_auth.signed_headers(hs256_config, subrequest(token))
        assert refused.value.status == 401, name


def hand_made_hs256(claims_document: dict[str, Any], secret: bytes) -> str:
    """An HS256 token made without PyJWT, which refuses to use a PEM key as an HMAC secret."""
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps(claims_document).encode())
    signing_input = header + b"." + payload
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()


def test_the_algorithm_is_the_configurations_never_the_tokens(rs256_config, rsa_key) -> None:
    # The classic confusion: an HS256 token whose HMAC secret is the RS256 public key (which is public).
    confused = hand_made_hs256(claims(), public_pem(rsa_key))
    # The same hand-made route with the right secret does make a token HS256 verifies: the test is sound.
    assert jwt.decode(hand_made_hs256(claims(), HS256_SECRET.encode()), HS256_SECRET, algorithms=["HS256"],
                      audience=AUDIENCE)["sub"] == "4242"  # fmt: skip
    for token in (confused, hs256()):
        with pytest.raises(Refused) as refused:
            edge_auth.signed_headers(rs256_config, subrequest(token))
        assert refused.value.status == 401


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", f"Bearer {'a' * 8_193}"],
)
def test_no_bearer_token_is_401(hs256_config, authorization: str | None) -> None:
    headers = subrequest(None)
    if authorization is not None:
        headers["Authorization"] = authorization
    with pytest.raises(Refused) as refused:
        edge_auth.signed_headers(hs256_config, headers)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("POST", "/api/pm/balance"),
        ("POST", "/intents"),
        ("POST", f"/intents/{INTENT_ID}"),
        ("GET", f"/intents/{INTENT_ID}/confirm"),
        ("POST", f"/intents/{INTENT_ID}/confirm/"),
        ("PUT", "/api/pm/allowances"),
        ("PUT", "/api/pm/allowances/0"),
        ("PUT", "/api/pm/allowances/x1"),
        ("DELETE", "/api/pm/balance"),
        ("PATCH", "/api/pm/allowances/77"),
        ("POST", "/api/pm/allowances/77"),
        ("HEAD", "/api/pm/balance"),
        (None, "/api/pm/balance"),
        ("GET", None),
        ("GET", "/intents"),
        ("GET", "/admin/fee-rules"),
        ("GET", "/api/pm/other"),
        ("GET", "/api/pm//balance"),
        ("GET", "/api/pm/../admin/fee-rules"),
        ("GET", "/api/pm/%62alance"),
        ("GET", f"/intents/{INTENT_ID}/cancel"),
        ("GET", f"/intents/{INTENT_ID}/events/"),
        ("GET", "/api/pm/balance?currency=THB#fragment"),
        ("GET", "/api/pm/history?limit=1 2"),
        ("GET", "/api/pm/history?" + "a" * 2_049),
        ("GET", "http://pm.internal/api/pm/balance"),
    ],
)
def test_only_pms_reads_for_the_app_are_signed(hs256_config, method: str | None, uri: str | None) -> None:
    headers = subrequest(hs256())
    headers.pop(edge_auth.HEADER_ORIGINAL_METHOD)
    headers.pop(edge_auth.HEADER_ORIGINAL_URI)
    if method is not None:
        headers[edge_auth.HEADER_ORIGINAL_METHOD] = method
    if uri is not None:
        headers[edge_auth.HEADER_ORIGINAL_URI] = uri
    with pytest.raises(Refused) as refused:
        edge_auth.signed_headers(hs256_config, headers)
    assert refused.value.status == 403


def test_a_bad_token_is_refused_before_the_uri_is_looked_at(hs256_config) -> None:
    with pytest.raises(Refused) as refused:
        edge_auth.signed_headers(hs256_config, subrequest("garbage", "/admin/fee-rules", "POST"))
    assert refused.value.status == 401


# -- configuration ---------------------------------------------------------------------------------


def test_exactly_one_jwt_key_is_configured(tmp_path: Path, rsa_key) -> None:
    key_file = tmp_path / "jwt.pem"
    key_file.write_bytes(public_pem(rsa_key))
    with pytest.raises(EdgeAuthConfigError, match="exactly one"):
        edge_auth.config_from(settings(edge_auth_jwt_public_key_file=key_file))
    with pytest.raises(EdgeAuthConfigError, match="exactly one"):
        edge_auth.config_from(settings(edge_auth_jwt_hs256_secret=None))
    rs256 = edge_auth.config_from(settings(edge_auth_jwt_hs256_secret=None, edge_auth_jwt_public_key_file=key_file))
    assert rs256.policy.algorithm == "RS256"
    assert edge_auth.config_from(settings()).policy.algorithm == "HS256"


@pytest.mark.parametrize(
    "unset",
    ["edge_auth_jwt_issuer", "edge_auth_jwt_audience", "edge_auth_key_id", "edge_auth_key_secret"],
)
def test_every_setting_the_edge_needs_is_named_when_missing(unset: str) -> None:
    with pytest.raises(EdgeAuthConfigError, match=f"PM_{unset.upper()}"):
        edge_auth.config_from(settings(**{unset: None}))


def test_a_short_hs256_secret_or_an_unbounded_leeway_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="edge_auth_jwt_hs256_secret"):
        settings(edge_auth_jwt_hs256_secret="short")
    with pytest.raises(ValueError, match="edge_auth_jwt_leeway_s"):
        settings(edge_auth_jwt_leeway_s=3_600)


def test_the_public_key_file_must_hold_an_rsa_public_key(tmp_path: Path, rsa_key) -> None:
    cases = {
        "missing.pem": None,
        "private.pem": rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "ec.pem": ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "huge.pem": b"x" * (edge_auth.PUBLIC_KEY_FILE_BYTES_MAX + 1),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(EdgeAuthConfigError, match="PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE"):
            edge_auth.config_from(settings(edge_auth_jwt_hs256_secret=None, edge_auth_jwt_public_key_file=path))


# -- the HTTP answers nginx reads ------------------------------------------------------------------


@pytest.fixture
async def client(hs256_config) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(edge_auth.create_edge_auth_app(hs256_config))) as started:
        yield started


async def test_the_auth_answer_carries_the_signed_headers(client: TestClient) -> None:
    response = await client.get(edge_auth.AUTH_PATH, headers=subrequest(hs256(), "/api/pm/history?limit=2"))
    assert response.status == 200
    signed = {name: response.headers[name] for name in (
        signing.HEADER_USER_ID, signing.HEADER_KEY_ID, signing.HEADER_TIMESTAMP, signing.HEADER_NONCE,
        signing.HEADER_SIGNATURE,
    )}  # fmt: skip
    assert gateway_accepts(signed, "GET", "/api/pm/history?limit=2")


async def test_the_auth_refusals_are_401_and_403_with_an_error_code(client: TestClient) -> None:
    expired = await client.get(edge_auth.AUTH_PATH, headers=subrequest(hs256(exp=int(time.time()) - 60)))
    assert expired.status == 401
    assert (await expired.json())["error"]["code"] == "UNAUTHENTICATED"
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")
    assert signing.HEADER_SIGNATURE not in expired.headers and signing.HEADER_USER_ID not in expired.headers
    other = await client.get(edge_auth.AUTH_PATH, headers=subrequest(hs256(), "/admin/fee-rules"))
    assert other.status == 403
    assert (await other.json())["error"]["code"] == "FORBIDDEN"
    assert signing.HEADER_SIGNATURE not in other.headers


async def test_any_other_path_is_404(client: TestClient) -> None:
    for method, path in (("GET", "/"), ("POST", "/intents"), ("GET", "/admin/fee-rules")):
        response = await client.request(method, path, headers=subrequest(hs256()))
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "NOT_FOUND"
        assert signing.HEADER_SIGNATURE not in response.headers
    assert (await client.get("/healthz")).status == 200
