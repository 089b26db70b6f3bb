"""API keys of HMAC-signing callers (DESIGN.md §7), stored in `pm.api_key`.

    key, secret = await create_key(pool, "auth-center", {"intents:write", "intents:read"})
    key, secret = await rotate_key(pool, key.key_id)     # the old secret keeps working until the next rotation
    await revoke_key(pool, key.key_id)                   # refused by every gateway within a second

A key has two active secrets at most: the current one and, after a rotation, the previous one, so a
caller can roll out its new secret without a moment where neither side agrees. The secret is issued
once (printed by `pm keys create`); PostgreSQL keeps it because an HMAC verifier needs the secret
itself, not a hash of it. Every function is one SQL statement.

Exceptions:
    ApiKeyError  a bad name, scope or merchant id (the message says which and what is allowed)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from pm.signing import new_secret

SCOPE_INTENTS_WRITE = "intents:write"
SCOPE_INTENTS_READ = "intents:read"
SCOPE_BALANCE_READ = "balance:read"
# Grants every other scope too, and reading any intent (not only a party's).
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_INTENTS_WRITE, SCOPE_INTENTS_READ, SCOPE_BALANCE_READ, SCOPE_ADMIN)

KEY_ID_PREFIX = "pmk_"
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")  # as the CHECK on pm.api_key.key_id
KEY_NAME_LENGTH_MAX = 100

_COLUMNS = "key_id, name, scopes, secret, previous_secret, merchant_id, created_at, rotated_at, revoked_at"


class ApiKeyError(ValueError):
    """A key cannot be made as asked: bad name, unknown scope, bad merchant id."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    secret: str
    previous_secret: str | None
    merchant_id: int | None
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def active_secrets(self) -> tuple[str, ...]:
        """The secrets a signature may be made with: current first, then the previous one."""
        if self.revoked:
            return ()
        return (self.secret,) if self.previous_secret is None else (self.secret, self.previous_secret)

    def allows(self, scope: str) -> bool:
        assert scope in SCOPES, scope
        return scope in self.scopes or SCOPE_ADMIN in self.scopes

    def to_json(self) -> dict[str, Any]:
        """What an operator may see: everything but the secrets."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "merchant_id": self.merchant_id,
            "created_at": self.created_at.isoformat(),
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


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


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(8)


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    name: str,
    scopes: str | Iterable[str],
    merchant_id: int | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret (the only time the secret is handed out)."""
    name = name.strip()
    if not 0 < len(name) <= KEY_NAME_LENGTH_MAX:
        raise ApiKeyError(f"a key name is 1 to {KEY_NAME_LENGTH_MAX} characters")
    scope_set = parse_scopes(scopes)
    if merchant_id is not None and merchant_id <= 0:
        raise ApiKeyError("a merchant id is a positive integer")
    secret = new_secret()
    row = await conn.fetchrow(
        f"INSERT INTO pm.api_key (key_id, name, scopes, secret, merchant_id) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_COLUMNS}",
        new_key_id(),
        name,
        sorted(scope_set),
        secret,
        merchant_id,
    )
    key = _key_from_row(row)
    assert key.active_secrets == (secret,)
    return key, secret


async def rotate_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> tuple[ApiKey, str] | None:
    """Issue a new secret; the current one becomes the previous one. None: no such active key."""
    secret = new_secret()
    row = await conn.fetchrow(
        "UPDATE pm.api_key SET previous_secret = secret, secret = $2, rotated_at = now()"
        f" WHERE key_id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
        key_id,
        secret,
    )
    if row is None:
        return None
    key = _key_from_row(row)
    assert key.active_secrets[0] == secret and len(key.active_secrets) == 2
    return key, secret


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> bool:
    """Revoke a key for good. False: no such key, or it was revoked already."""
    status = await conn.execute(
        "UPDATE pm.api_key SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return status == "UPDATE 1"


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
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        merchant_id=row["merchant_id"],
        created_at=row["created_at"],
        rotated_at=row["rotated_at"],
        revoked_at=row["revoked_at"],
    )
