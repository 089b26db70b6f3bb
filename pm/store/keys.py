"""API keys of HMAC-signing callers (DESIGN.md §7), stored in `pm.api_key`.

    key, secret = await create_key(pool, "auth-center", {"intents:write", "intents:read"},
                                   operations="P2P_TRANSFER,QP_TOPUP")
    key, secret = await rotate_key(pool, key.key_id)     # the old secret keeps working for 24 h
    await revoke_key(pool, key.key_id)                   # refused by every gateway within a second
    await set_rate(pool, key.key_id, 50)                 # 50 requests/s from now on (each gateway's own)

A key carries the operation types it may create (`operations`): `POST /intents` and `POST /quote` refuse
any other with 403 OPERATION_NOT_ALLOWED (gateway/intents.py). A key bound to a merchant (a mini-app
backend) may only ever create MINIAPP_CHARGE and MINIAPP_CREDIT, whatever its stored list says: refused
here when the key is made, by a CHECK in the table, and again by `ApiKey.may_create` at every request.

A key has two active secrets at most: the current one and, after a rotation, the previous one until
its grace period ends (`previous_secret_expires_at`), so a caller can roll out its new secret without a
moment where neither side agrees, and a leaked secret stops working when the grace ends. The secret is
issued once (printed by `pm keys create`); PostgreSQL keeps it because an HMAC verifier needs the
secret itself, not a hash of it. Every function is one SQL statement.

A key carries its request rate (`requests_per_s`): each gateway process admits that many of its signed
requests per second (a burst of as many at once) and answers the rest 429 RATE_LIMITED (gateway/rate_limit.py).

Exceptions:
    ApiKeyError  a bad name, scope, operation list, merchant id, grace period or rate (the message says
                 which and what is allowed)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from pm.config.constants import (
    KEY_REQUESTS_PER_S_DEFAULT,
    KEY_REQUESTS_PER_S_MAX,
    KEY_REQUESTS_PER_S_MIN,
    KEY_ROTATION_GRACE_S_DEFAULT,
    KEY_ROTATION_GRACE_S_MAX,
)
from pm.domain.intent import OperationType
from pm.domain.signing import new_secret

SCOPE_INTENTS_WRITE = "intents:write"
SCOPE_INTENTS_READ = "intents:read"
SCOPE_BALANCE_READ = "balance:read"
# The app's (the nginx edge's key): confirm the user's mini-app charges, grant and revoke allowances.
SCOPE_CONSENT_WRITE = "consent:write"
# Grants every other scope too, and reading any intent (not only a party's).
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_INTENTS_WRITE, SCOPE_INTENTS_READ, SCOPE_BALANCE_READ, SCOPE_CONSENT_WRITE, SCOPE_ADMIN)
# What a merchant-bound key never holds, whatever its row says. It signs its own X-User-Id, so with these
# it would act as any user it names: consent (confirm its own charges), any user's balance and history,
# and admin.
MERCHANT_KEY_REFUSED_SCOPES = frozenset({SCOPE_ADMIN, SCOPE_CONSENT_WRITE, SCOPE_BALANCE_READ})

# What a merchant-bound key (a mini-app backend) may create: its own charges and credits, nothing else.
MERCHANT_OPERATIONS = frozenset({OperationType.MINIAPP_CHARGE, OperationType.MINIAPP_CREDIT})
# What a merchant-bound key may create: its MINIAPP types, and refunds of its own charges (the gateway
# checks that the charge is its merchant's; gateway/refunds.py). Not given by default: `--operations`.
MERCHANT_KEY_OPERATIONS = MERCHANT_OPERATIONS | {OperationType.REFUND}
# What an operator's key alone may create (and only with the admin scope).
ADMIN_OPERATIONS = frozenset({OperationType.ADMIN_ADJUSTMENT})
# `--operations none`: a key that may create no intent at all (e.g. a reader's).
OPERATIONS_NONE = "none"

KEY_ID_PREFIX = "pmk_"
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")  # as the CHECK on pm.api_key.key_id
KEY_NAME_LENGTH_MAX = 100

_COLUMNS = (
    "key_id, name, scopes, operations, secret, previous_secret, previous_secret_expires_at, merchant_id, "
    "created_at, rotated_at, revoked_at, requests_per_s"
)
# Durations of `pm keys rotate --grace`: a whole number and a unit, or a bare 0.
_DURATION_PATTERN = re.compile(r"(?P<number>[0-9]{1,7})(?P<unit>[smhd]?)")
_DURATION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class ApiKeyError(ValueError):
    """A key cannot be made or rotated as asked: bad name, scope, operation list, merchant id or grace."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    operations: frozenset[OperationType]
    secret: str
    previous_secret: str | None
    # When the previous secret stops working (set with it by a rotation; None without one).
    previous_secret_expires_at: datetime | None
    merchant_id: int | None
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    # Signed requests per second each gateway process admits for this key (and so its burst).
    requests_per_s: int = KEY_REQUESTS_PER_S_DEFAULT

    def __post_init__(self) -> None:
        assert (self.previous_secret is None) == (self.previous_secret_expires_at is None), self.key_id
        assert KEY_REQUESTS_PER_S_MIN <= self.requests_per_s <= KEY_REQUESTS_PER_S_MAX, self.key_id

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def active_secrets(self) -> tuple[str, ...]:
        """The secrets a signature may be made with now: current first, then the previous one until its
        grace ends. Evaluated on every call, so a cached key stops accepting the previous secret at the
        moment it expires, in every gateway."""
        return self.secrets_active_at(datetime.now(UTC))

    def secrets_active_at(self, now: datetime) -> tuple[str, ...]:
        if self.revoked:
            return ()
        expires_at = self.previous_secret_expires_at
        if self.previous_secret is None or expires_at is None or expires_at <= now:
            return (self.secret,)
        return (self.secret, self.previous_secret)

    def allows(self, scope: str) -> bool:
        assert scope in SCOPES, scope
        if self.merchant_id is not None:
            # Defence in depth beside create_key's refusal (MERCHANT_KEY_REFUSED_SCOPES). Its intents:read
            # reads only its own merchant's intents (gateway.intents._readable_intent).
            return scope in self.scopes and scope not in MERCHANT_KEY_REFUSED_SCOPES
        return scope in self.scopes or SCOPE_ADMIN in self.scopes

    def may_create(self, operation: OperationType) -> bool:
        """Whether this key may create an intent of `operation`: in its list, and for a merchant-bound key
        only the merchant's own operations, whatever the list says (defence in depth)."""
        if self.merchant_id is not None and operation not in MERCHANT_KEY_OPERATIONS:
            return False
        return operation in self.operations

    def to_json(self) -> dict[str, Any]:
        """What an operator may see: everything but the secrets."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "operations": sorted(self.operations),
            "merchant_id": self.merchant_id,
            "created_at": self.created_at.isoformat(),
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
            "previous_secret_expires_at": _iso(self.previous_secret_expires_at),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "requests_per_s": self.requests_per_s,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    """`"intents:write,intents:read"` (or an iterable of scopes) as a set; refuses unknown scopes."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(item.strip() for item in items if item.strip())
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {sorted(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ApiKeyError(f"a key needs at least one scope; known: {', '.join(SCOPES)}")
    return scopes


def parse_operations(text: str | Iterable[str]) -> frozenset[OperationType]:
    """`"P2P_TRANSFER,QP_TOPUP"` (or an iterable of names) as a set; `"none"` (or nothing) is the empty set.
    Refuses names that are not a `pm.domain.intent.OperationType`."""
    items = text.split(",") if isinstance(text, str) else [str(item) for item in text]
    names = {item.strip() for item in items if item.strip()}
    if names == {OPERATIONS_NONE}:
        return frozenset()
    unknown = names - set(OperationType.__members__)
    if unknown:
        known = ", ".join(OperationType.__members__)
        raise ApiKeyError(f"unknown operation type(s) {sorted(unknown)}; known: {known} (or {OPERATIONS_NONE})")
    return frozenset(OperationType(name) for name in names)


def key_operations(
    scopes: frozenset[str], merchant_id: int | None, operations: str | Iterable[str] | None
) -> frozenset[OperationType]:
    """The operation list a new key gets, or the refusal. Without a list: a merchant key that can write
    gets its two MINIAPP types, a key that cannot write intents none, and any other key must say."""
    can_write = SCOPE_INTENTS_WRITE in scopes or SCOPE_ADMIN in scopes
    refused = sorted(scopes & (MERCHANT_KEY_REFUSED_SCOPES - {SCOPE_ADMIN})) if merchant_id is not None else []
    if refused:
        # A merchant signs its own X-User-Id: with consent:write it could confirm its own charges, with
        # balance:read read any user's balance and history.
        raise ApiKeyError(f"a merchant-bound key may not have the {', '.join(refused)} scope")
    if operations is None:
        if not can_write:
            return frozenset()
        if merchant_id is not None:
            return MERCHANT_OPERATIONS
        raise ApiKeyError(
            "say which operation types this key may create (--operations), e.g. "
            "P2P_TRANSFER,IPPS_WITHDRAWAL,THAI_QR_PAY,QP_TOPUP; or none"
        )
    chosen = parse_operations(operations)
    if chosen and not can_write:
        raise ApiKeyError(f"operation types need the {SCOPE_INTENTS_WRITE} (or {SCOPE_ADMIN}) scope")
    if merchant_id is not None and not chosen <= MERCHANT_KEY_OPERATIONS:
        raise ApiKeyError(
            f"a merchant-bound key may only create {', '.join(sorted(MERCHANT_KEY_OPERATIONS))};"
            f" not {', '.join(sorted(chosen - MERCHANT_KEY_OPERATIONS))}"
        )
    if merchant_id is None and chosen & MERCHANT_OPERATIONS:
        raise ApiKeyError("MINIAPP_CHARGE and MINIAPP_CREDIT need a key bound to a merchant (--merchant-id)")
    if chosen & ADMIN_OPERATIONS and SCOPE_ADMIN not in scopes:
        raise ApiKeyError(f"ADMIN_ADJUSTMENT needs the {SCOPE_ADMIN} scope")
    return chosen


def parse_grace_s(text: str) -> int:
    """`pm keys rotate --grace`: `90s`, `30m`, `1h`, `2d` or `0` (at once) as whole seconds."""
    match = _DURATION_PATTERN.fullmatch(text.strip())
    if match is None or (match["unit"] == "" and int(match["number"]) != 0):
        raise ApiKeyError(f"grace {text!r}: give a number and a unit (s, m, h, d), e.g. 90s, 30m, 1h; or 0")
    grace_s = int(match["number"]) * _DURATION_UNIT_S.get(match["unit"], 1)
    if grace_s > KEY_ROTATION_GRACE_S_MAX:
        raise ApiKeyError(f"grace {text!r}: at most {KEY_ROTATION_GRACE_S_MAX // 86_400} days")
    return grace_s


def check_rate(requests_per_s: int) -> int:
    """A key's request rate, or the refusal (the table's CHECK, said before anything is written)."""
    if isinstance(requests_per_s, bool) or not KEY_REQUESTS_PER_S_MIN <= requests_per_s <= KEY_REQUESTS_PER_S_MAX:
        raise ApiKeyError(
            f"a key's rate is {KEY_REQUESTS_PER_S_MIN} to {KEY_REQUESTS_PER_S_MAX:,} requests per second,"
            f" not {requests_per_s}"
        )
    return requests_per_s


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(8)


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    name: str,
    scopes: str | Iterable[str],
    merchant_id: int | None = None,
    operations: str | Iterable[str] | None = None,
    requests_per_s: int = KEY_REQUESTS_PER_S_DEFAULT,
) -> tuple[ApiKey, str]:
    """A new key and its secret (the only time the secret is handed out). `operations`: the operation
    types it may create (`key_operations` says what happens without); `requests_per_s`: its rate."""
    name = name.strip()
    if not 0 < len(name) <= KEY_NAME_LENGTH_MAX:
        raise ApiKeyError(f"a key name is 1 to {KEY_NAME_LENGTH_MAX} characters")
    scope_set = parse_scopes(scopes)
    if merchant_id is not None and merchant_id <= 0:
        raise ApiKeyError("a merchant id is a positive integer")
    if merchant_id is not None and SCOPE_ADMIN in scope_set:
        raise ApiKeyError("a merchant-bound key cannot hold the admin scope: make the operator a key of its own")
    operation_set = key_operations(scope_set, merchant_id, operations)
    check_rate(requests_per_s)
    secret = new_secret()
    row = await conn.fetchrow(
        "INSERT INTO pm.api_key (key_id, name, scopes, operations, secret, merchant_id, requests_per_s)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}",
        new_key_id(),
        name,
        sorted(scope_set),
        sorted(operation_set),
        secret,
        merchant_id,
        requests_per_s,
    )
    key = _key_from_row(row)
    assert key.active_secrets == (secret,)
    assert key.operations == operation_set
    assert key.requests_per_s == requests_per_s
    return key, secret


async def rotate_key(
    conn: asyncpg.Connection | asyncpg.Pool, key_id: str, grace_s: int = KEY_ROTATION_GRACE_S_DEFAULT
) -> tuple[ApiKey, str] | None:
    """Issue a new secret; the current one becomes the previous one for `grace_s` (0: dropped at once,
    with any older previous secret). None: no such active key."""
    assert 0 <= grace_s <= KEY_ROTATION_GRACE_S_MAX, grace_s
    secret = new_secret()
    # The database's clock sets the expiry; each gateway compares it with its own (keep clocks in step).
    row = await conn.fetchrow(
        "UPDATE pm.api_key SET"
        " previous_secret = CASE WHEN $3::int > 0 THEN secret END,"
        " previous_secret_expires_at = CASE WHEN $3::int > 0 THEN now() + make_interval(secs => $3::int) END,"
        " secret = $2, rotated_at = now()"
        f" WHERE key_id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
        key_id,
        secret,
        grace_s,
    )
    if row is None:
        return None
    key = _key_from_row(row)
    assert key.rotated_at is not None
    assert key.secrets_active_at(key.rotated_at) == ((secret, key.previous_secret) if grace_s else (secret,))
    return key, secret


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> bool:
    """Revoke a key for good. False: no such key, or it was revoked already."""
    status = await conn.execute(
        "UPDATE pm.api_key SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return status == "UPDATE 1"


async def set_rate(conn: asyncpg.Connection | asyncpg.Pool, key_id: str, requests_per_s: int) -> ApiKey | None:
    """Change a key's request rate; every gateway applies it within a second (its key cache). None: no
    such active key."""
    check_rate(requests_per_s)
    row = await conn.fetchrow(
        f"UPDATE pm.api_key SET requests_per_s = $2 WHERE key_id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
        key_id,
        requests_per_s,
    )
    return _key_from_row(row) if row else None


async def lookup_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> ApiKey | None:
    """The key, revoked or not; None when there is no such key (or the id cannot be one)."""
    if not KEY_ID_PATTERN.fullmatch(key_id):
        return None
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.api_key WHERE key_id = $1", key_id)
    return _key_from_row(row) if row else None


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[ApiKey]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM pm.api_key ORDER BY created_at, key_id")
    return [_key_from_row(row) for row in rows]


def _key_from_row(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        scopes=frozenset(row["scopes"]),
        # A name this code does not know (a type removed since) grants nothing.
        operations=frozenset(OperationType(name) for name in row["operations"] if name in OperationType.__members__),
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        merchant_id=row["merchant_id"],
        created_at=row["created_at"],
        rotated_at=row["rotated_at"],
        revoked_at=row["revoked_at"],
        requests_per_s=row["requests_per_s"],
    )
