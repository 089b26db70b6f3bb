"""Proves the rules of API keys without a database: which operation types (and what rate) a key may be made with (a
merchant's key only its two MINIAPP types, MINIAPP only for a merchant, ADMIN_ADJUSTMENT only with admin,
none without a write scope, an explicit list otherwise), that `may_create` refuses a merchant's key
anything else even when its stored list says otherwise, that a rotated-out secret counts only until its
grace ends (checked at each call, not when the key was read), and how `--grace` durations parse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pm.domain.intent import OperationType
from pm.store import keys

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
USER_TYPES = frozenset(
    {OperationType.P2P_TRANSFER, OperationType.IPPS_WITHDRAWAL, OperationType.THAI_QR_PAY, OperationType.QP_TOPUP}
)


def _key(**fields: object) -> keys.ApiKey:
    defaults: dict[str, object] = {
        "key_id": "pmk_0123456789abcdef", "name": "t", "scopes": frozenset({"intents:write"}),
        "operations": USER_TYPES, "secret": "current", "previous_secret": None, "previous_secret_expires_at": None,
        "merchant_id": None, "created_at": NOW, "rotated_at": None, "revoked_at": None,
    }  # fmt: skip
    return keys.ApiKey(**{**defaults, **fields})  # type: ignore[arg-type]


def test_a_merchant_key_may_create_only_its_own_operations_whatever_its_list_says() -> None:
    # A list that slipped past every other check (say, an edited row) still grants a merchant nothing else.
    merchant = _key(merchant_id=7, operations=frozenset(OperationType))
    assert {op for op in OperationType if merchant.may_create(op)} == keys.MERCHANT_KEY_OPERATIONS
    assert keys.MERCHANT_KEY_OPERATIONS == keys.MERCHANT_OPERATIONS | {OperationType.REFUND}  # its own charges
    plain = _key()
    assert {op for op in OperationType if plain.may_create(op)} == USER_TYPES
    assert not _key(operations=frozenset()).may_create(OperationType.P2P_TRANSFER)


@pytest.mark.parametrize(
    ("scopes", "merchant_id", "operations", "expected"),
    [
        ({"intents:write"}, 7, None, keys.MERCHANT_OPERATIONS),  # a merchant's default: its two
        ({"intents:write"}, 7, "MINIAPP_CHARGE", {OperationType.MINIAPP_CHARGE}),
        ({"balance:read"}, None, None, set()),  # cannot write: nothing
        ({"intents:read"}, 7, None, set()),
        ({"intents:write"}, None, "none", set()),
        ({"intents:write"}, None, " P2P_TRANSFER , QP_TOPUP ", {OperationType.P2P_TRANSFER, OperationType.QP_TOPUP}),
        ({"admin"}, None, ["ADMIN_ADJUSTMENT"], {OperationType.ADMIN_ADJUSTMENT}),
    ],
)
def test_operations_a_key_is_made_with(
    scopes: set[str], merchant_id: int | None, operations: object, expected: set[OperationType]
) -> None:
    assert keys.key_operations(frozenset(scopes), merchant_id, operations) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scopes", "merchant_id", "operations", "message"),
    [
        ({"intents:write"}, None, None, "--operations"),  # a writer must say what it may create
        ({"admin"}, None, None, "--operations"),
        ({"intents:write"}, 7, "P2P_TRANSFER", "merchant-bound key may only create"),
        ({"intents:write"}, 7, "MINIAPP_CHARGE,THAI_QR_PAY", "THAI_QR_PAY"),
        ({"admin"}, 7, "ADMIN_ADJUSTMENT", "merchant-bound key may only create"),
        ({"intents:write", "consent:write"}, 7, None, "consent:write"),  # would confirm its own charges
        ({"intents:write", "balance:read"}, 7, None, "balance:read"),  # would read any user's balance
        ({"intents:read", "balance:read", "consent:write"}, 7, "none", "balance:read, consent:write"),
        ({"intents:write"}, None, "MINIAPP_CREDIT", "bound to a merchant"),
        ({"intents:write"}, None, "ADMIN_ADJUSTMENT", "admin scope"),
        ({"balance:read"}, None, "P2P_TRANSFER", "intents:write"),
        ({"intents:write"}, None, "P2P_TRANSFER,PRINT_MONEY", "PRINT_MONEY"),
        ({"intents:write"}, None, "p2p_transfer", "unknown operation"),
    ],
)
def test_operation_lists_that_are_refused(
    scopes: set[str], merchant_id: int | None, operations: str | None, message: str
) -> None:
    with pytest.raises(keys.ApiKeyError, match=message):
        keys.key_operations(frozenset(scopes), merchant_id, operations)


def test_the_previous_secret_counts_until_its_grace_ends_evaluated_at_each_call() -> None:
    expires_at = NOW + timedelta(hours=1)
    key = _key(previous_secret="old", previous_secret_expires_at=expires_at)
    assert key.secrets_active_at(NOW) == ("current", "old")
    assert key.secrets_active_at(expires_at - timedelta(microseconds=1)) == ("current", "old")
    assert key.secrets_active_at(expires_at) == ("current",)
    # The same object, read once: `active_secrets` looks at the clock each time it is asked.
    live = _key(previous_secret="old", previous_secret_expires_at=datetime.now(UTC) + timedelta(hours=1))
    gone = _key(previous_secret="old", previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert (live.active_secrets, gone.active_secrets) == (("current", "old"), ("current",))
    assert _key(revoked_at=NOW, previous_secret="old", previous_secret_expires_at=expires_at).active_secrets == ()


def test_a_previous_secret_always_comes_with_its_expiry() -> None:
    with pytest.raises(AssertionError):
        _key(previous_secret="old", previous_secret_expires_at=None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("0s", 0), ("90s", 90), ("30m", 1_800), ("1h", 3_600), ("24h", 86_400), ("30d", 2_592_000)],
)
def test_grace_durations(text: str, seconds: int) -> None:
    assert keys.parse_grace_s(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "1w", "-1h", "1.5h", "h", "1 h x", "31d", "1h30m", "١h"])
def test_bad_grace_durations_are_refused(text: str) -> None:
    with pytest.raises(keys.ApiKeyError, match="grace"):
        keys.parse_grace_s(text)


def test_a_merchant_key_is_never_an_operators() -> None:
    """A merchant's key that holds `admin` (an edited row, a key made before this rule) still opens no admin
    endpoint and reads no other user's intent; create_key refuses to make one."""
    merchant = _key(merchant_id=7, scopes=frozenset({"admin", "intents:write"}), operations=keys.MERCHANT_OPERATIONS)
    assert not merchant.allows(keys.SCOPE_ADMIN)
    assert merchant.allows(keys.SCOPE_INTENTS_WRITE)
    assert not merchant.allows(keys.SCOPE_INTENTS_READ)  # admin grants no other scope to a merchant
    assert _key(scopes=frozenset({"admin"})).allows(keys.SCOPE_INTENTS_READ)


def test_a_merchant_key_never_reads_balances_or_gives_consent_whatever_its_row_says() -> None:
    """It signs its own X-User-Id: with balance:read it would read any user's balance and history."""
    every_scope = frozenset(keys.SCOPES) - {"admin"}
    merchant = _key(merchant_id=7, scopes=every_scope, operations=keys.MERCHANT_OPERATIONS)
    assert {scope for scope in keys.SCOPES if merchant.allows(scope)} == {"intents:write", "intents:read"}
    assert _key(scopes=every_scope).allows(keys.SCOPE_BALANCE_READ)


async def test_create_key_refuses_a_merchant_key_with_the_admin_scope() -> None:
    with pytest.raises(keys.ApiKeyError, match="admin scope"):
        await keys.create_key(None, "shop", "admin,intents:write", merchant_id=7)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -1, 100_001, True])
async def test_a_rate_out_of_bounds_is_refused_before_anything_is_written(rate: int) -> None:
    with pytest.raises(keys.ApiKeyError, match="rate"):
        keys.check_rate(rate)
    with pytest.raises(keys.ApiKeyError, match="rate"):  # no connection: refused before the INSERT
        await keys.create_key(None, "caller", "balance:read", requests_per_s=rate)  # type: ignore[arg-type]
    assert keys.check_rate(1) == 1 and keys.check_rate(100_000) == 100_000
