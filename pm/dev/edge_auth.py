"""The Auth Center's `auth_request` endpoint, for development and tests (issue 13): `pm run edge-auth`.

nginx (ops/nginx/pm.conf) asks it about every read of PM the app makes, before forwarding the read:

    GET /auth/pm
    Authorization: Bearer <the app's JWT>
    X-Original-Method: GET
    X-Original-URI: /api/pm/history?limit=20         (nginx's $request_uri: what PM receives)

    200  X-User-Id, X-PM-Key-Id, X-PM-Timestamp, X-PM-Nonce, X-PM-Signature   nginx copies them to PM
    401  UNAUTHENTICATED   no token, or one expired, forged, of another issuer or audience, or whose `sub`
                           is not a user id
    403  FORBIDDEN         a method or URI the edge never signs: only GET of PM's reads for the app
                           (balance, history, allowances, an intent, its events), POST
                           /intents/{id}/confirm and PUT or DELETE /api/pm/allowances/{merchant_id},
                           each with an empty body (an allowance's cap is in the query)

The token is checked with one key (HS256 with PM_EDGE_AUTH_JWT_HS256_SECRET, or RS256 with the PEM
public key in PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE; the token's own header never picks the algorithm):
`exp`, `iss` and `aud` are required and checked (± PM_EDGE_AUTH_JWT_LEEWAY_S), and `sub` is the user id,
a positive integer written canonically. The signature is pm.domain.signing's, the SDK's own, over the
original method and URI, that user and the empty body (nginx forwards none), with the edge's API key
(PM_EDGE_AUTH_KEY_ID, PM_EDGE_AUTH_KEY_SECRET). Any other path answers 404, as a stand-in for the rest
of the Auth Center.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.auth import USER_ID_MAX, USER_ID_PATTERN
from pm.config.settings import Settings
from pm.domain import signing

log = logging.getLogger("pm.dev.edge_auth")

AUTH_PATH = "/auth/pm"  # what ops/nginx/pm.conf's auth subrequest asks
HEADER_ORIGINAL_METHOD = "X-Original-Method"
HEADER_ORIGINAL_URI = "X-Original-URI"
# PM's routes for the app, per method, and nothing else of PM: what the edge's key may be asked to sign.
SIGNABLE_PATHS: dict[str, re.Pattern[str]] = {
    "GET": re.compile(r"/api/pm/(?:balance|history|allowances)|/intents/[0-9A-Za-z-]{1,64}(?:/events)?"),
    "POST": re.compile(r"/intents/[0-9A-Za-z-]{1,64}/confirm"),  # the user consents to a mini-app charge
    "PUT": re.compile(r"/api/pm/allowances/[1-9][0-9]{0,17}"),  # ?daily_max_minor=N&currency=THB
    "DELETE": re.compile(r"/api/pm/allowances/[1-9][0-9]{0,17}"),
}
# A query as sent: visible ASCII, no fragment; the gateway signs it as it receives it.
SIGNABLE_QUERY = re.compile(r"[\x21-\x22\x24-\x7e]{0,2048}")
TOKEN_LENGTH_MAX = 8_192
PUBLIC_KEY_FILE_BYTES_MAX = 64 * 1024
BODY_BYTES_MAX = 1_024  # the auth subrequest has no body
SHUTDOWN_TIMEOUT_S = 5.0


class EdgeAuthConfigError(ValueError):
    """The settings cannot make an edge: the message names the PM_EDGE_AUTH_* variable and what it needs."""


class Refused(Exception):
    """A request the edge does not sign: 401 (the token) or 403 (what it asks to read)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    algorithm: str  # "HS256" or "RS256": the only one decode accepts
    key: str | RSAPublicKey
    issuer: str
    audience: str
    leeway_s: int


@dataclass(frozen=True, slots=True)
class EdgeAuthConfig:
    policy: TokenPolicy
    key_id: str
    key_secret: str


def config_from(settings: Settings) -> EdgeAuthConfig:
    """The edge's configuration, or EdgeAuthConfigError naming what is missing or wrong."""
    secret, key_file = settings.edge_auth_jwt_hs256_secret, settings.edge_auth_jwt_public_key_file
    if (secret is None) == (key_file is None):
        raise EdgeAuthConfigError(
            "set exactly one of PM_EDGE_AUTH_JWT_HS256_SECRET (HS256) and PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE (RS256)"
        )
    missing = [
        name
        for name, value in (
            ("PM_EDGE_AUTH_JWT_ISSUER", settings.edge_auth_jwt_issuer),
            ("PM_EDGE_AUTH_JWT_AUDIENCE", settings.edge_auth_jwt_audience),
            ("PM_EDGE_AUTH_KEY_ID", settings.edge_auth_key_id),
            ("PM_EDGE_AUTH_KEY_SECRET", settings.edge_auth_key_secret),
        )
        if value is None
    ]
    if missing:
        raise EdgeAuthConfigError(f"set {', '.join(missing)}")
    assert settings.edge_auth_jwt_issuer and settings.edge_auth_jwt_audience
    assert settings.edge_auth_key_id and settings.edge_auth_key_secret
    algorithm, key = ("HS256", secret) if secret is not None else ("RS256", _public_key(key_file))
    assert key is not None
    policy = TokenPolicy(
        algorithm, key, settings.edge_auth_jwt_issuer, settings.edge_auth_jwt_audience, settings.edge_auth_jwt_leeway_s
    )
    return EdgeAuthConfig(policy, settings.edge_auth_key_id, settings.edge_auth_key_secret)


def _public_key(path: Path | None) -> RSAPublicKey:
    assert path is not None
    try:
        with path.open("rb") as file:
            pem = file.read(PUBLIC_KEY_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise EdgeAuthConfigError(f"PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE: {exc.strerror}: {path}") from exc
    if len(pem) > PUBLIC_KEY_FILE_BYTES_MAX:
        raise EdgeAuthConfigError(f"PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE: larger than {PUBLIC_KEY_FILE_BYTES_MAX} bytes")
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise EdgeAuthConfigError(f"PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE: not a PEM public key: {path}") from exc
    if not isinstance(key, RSAPublicKey):
        raise EdgeAuthConfigError(f"PM_EDGE_AUTH_JWT_PUBLIC_KEY_FILE: not an RSA public key (RS256): {path}")
    return key


def user_of(authorization: str | None, policy: TokenPolicy) -> int:
    """The user id a valid `Authorization: Bearer <JWT>` names; Refused(401) for anything else."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Refused(401, "send Authorization: Bearer <token>")
    if len(token) > TOKEN_LENGTH_MAX:
        raise Refused(401, f"the token is longer than {TOKEN_LENGTH_MAX} characters")
    try:
        claims = jwt.decode(
            token,
            policy.key,
            algorithms=[policy.algorithm],
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway_s,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Refused(401, "the token has expired") from None
    except jwt.PyJWTError as exc:
        raise Refused(401, f"invalid token: {exc}") from None
    subject = claims["sub"]
    if not (isinstance(subject, str) and USER_ID_PATTERN.fullmatch(subject) and int(subject) <= USER_ID_MAX):
        raise Refused(401, "the token's sub is not a user id")
    return int(subject)


def signable(method: str | None, uri: str | None) -> tuple[str, str]:
    """(path, raw query) of a request the edge signs; Refused(403) for any other method or URI."""
    pattern = SIGNABLE_PATHS.get(method or "")
    if pattern is None:
        raise Refused(403, f"the edge signs only {', '.join(SIGNABLE_PATHS)} requests")
    path, _, raw_query = (uri or "").partition("?")
    if not pattern.fullmatch(path) or not SIGNABLE_QUERY.fullmatch(raw_query):
        raise Refused(403, "the edge signs only PM's routes for the app")
    return path, raw_query


def signed_headers(config: EdgeAuthConfig, headers: Mapping[str, str], timestamp: int | None = None) -> dict[str, str]:
    """What the auth_request answer carries for this subrequest's headers (Refused when it carries none)."""
    user_id = user_of(headers.get("Authorization"), config.policy)
    method = headers.get(HEADER_ORIGINAL_METHOD)
    path, raw_query = signable(method, headers.get(HEADER_ORIGINAL_URI))
    assert method is not None
    signed = signing.sign_headers(
        key_id=config.key_id,
        secret=config.key_secret,
        method=method,
        path=path,
        raw_query=raw_query,
        body=b"",
        user_id=user_id,
        timestamp=timestamp,
    )
    assert signed[signing.HEADER_USER_ID] == str(user_id)
    return signed


# -- the HTTP app ----------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def create_edge_auth_app(config: EdgeAuthConfig) -> web.Application:
    async def authorize(request: web.Request) -> web.Response:
        try:
            headers = signed_headers(config, request.headers)
        except Refused as refusal:
            log.info("refused", extra={"status": refusal.status, "reason": refusal.message})
            if refusal.status == 401:
                challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                return _error(401, "UNAUTHENTICATED", refusal.message, challenge)
            return _error(403, "FORBIDDEN", refusal.message)
        return web.Response(status=200, headers=headers)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def elsewhere(request: web.Request) -> web.Response:
        return _error(404, "NOT_FOUND", f"the development Auth Center serves only {AUTH_PATH}")

    app = web.Application(client_max_size=BODY_BYTES_MAX)
    app.router.add_route("*", AUTH_PATH, authorize)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", elsewhere)
    return app


async def run_edge_auth(settings: Settings) -> None:
    """Serve on PM_EDGE_AUTH_HOST:PM_EDGE_AUTH_PORT until cancelled; EdgeAuthConfigError before it listens."""
    config = config_from(settings)
    runner = web.AppRunner(create_edge_auth_app(config), handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.edge_auth_host, settings.edge_auth_port, reuse_address=True)
        await site.start()
        url = f"http://{settings.edge_auth_host}:{settings.edge_auth_port}"
        log.info("edge-auth listening", extra={"url": url, "algorithm": config.policy.algorithm})
        await asyncio.Event().wait()  # Serves until cancelled: meant to run forever.
    finally:
        await runner.cleanup()
