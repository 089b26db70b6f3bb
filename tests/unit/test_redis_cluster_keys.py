"""Cluster URLs and hash tags (issue 14, part 5), without a server: the URL forms and their refusals, and
that the keys each script or transaction touches together share one slot (redis-py's own CRC16 slot
function), while the families meant to spread over the masters do spread."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from gateway.auth import nonce_key, nonce_marker_key, nonce_marker_keys
from pm.config.redis_url import RedisUrlError, as_cluster_url, is_cluster_url, parse_cluster_url
from pm.config.settings import Settings
from pm.config.topology import hash_tag, load_topology, parse_topology, renamed_document
from pm.domain.intent import Intent, OperationType, State
from pm.domain.limits import LimitRule, Period, counters_for, released_key


def test_a_cluster_url_names_its_nodes_and_credentials() -> None:
    parsed = parse_cluster_url("redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001/")
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (parsed.username, parsed.password, parsed.ssl) == ("user", "p@ss", False)
    assert parse_cluster_url("rediss+cluster://h:1").ssl
    assert is_cluster_url("REDIS+CLUSTER://h:1") and not is_cluster_url("redis://h:1")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://h:0", "host:port"),
        ("redis+cluster://h:1,:2", "host:port"),
        ("redis+cluster://h:1/3", "database 0"),
        ("redis://h:1", "not a cluster URL"),
    ],
)
def test_a_bad_cluster_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(RedisUrlError, match=reason):
        parse_cluster_url(url)


def test_pm_redis_cluster_turns_a_redis_url_into_a_cluster_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_REDIS_URL", "redis://10.0.0.1:7000")
    monkeypatch.setenv("PM_REDIS_CLUSTER", "true")
    assert Settings().redis_url == "redis+cluster://10.0.0.1:7000"
    assert as_cluster_url("rediss://h:1") == "rediss+cluster://h:1"
    with pytest.raises(RedisUrlError, match="redis:// or rediss://"):
        as_cluster_url("unix:///tmp/redis.sock")


def test_settings_refuse_a_bad_cluster_url_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_REDIS_URL", "redis+cluster://h:1/2")
    with pytest.raises(ValidationError, match="database 0"):
        Settings()


def test_hash_tags_follow_the_cluster_rule() -> None:
    assert hash_tag("pm:{streams}:intents:created") == "streams"
    assert hash_tag("a{}b{c}") is None  # an empty first tag: the whole key is hashed
    assert hash_tag("plain") is None and hash_tag("a{b") is None


def test_every_stream_of_the_topology_shares_one_slot() -> None:
    for topology in (load_topology(), parse_topology(renamed_document("t1234567890:"))):
        assert topology.cluster_problem() is None
        assert len({key_slot(key.encode()) for key in topology.stream_keys()}) == 1


def test_a_topology_with_an_untagged_stream_names_the_problem() -> None:
    document = renamed_document("t1:")
    document["stages"]["fees"]["stream"] = "pm:intents:validated"
    problem = parse_topology(document).cluster_problem()
    assert problem is not None and "same hash tag" in problem and "pm:intents:validated" in problem


def _intent(sender_id: int) -> Intent:
    return Intent(
        id=uuid.uuid4(), operation_type=OperationType.P2P_TRANSFER, state=State.PRICED, version=3, amount_minor=100,
        currency="THB", sender_id=sender_id, recipient_id=sender_id + 1, created_at=datetime(2024, 5, 10, tzinfo=UTC),
    )  # fmt: skip


def test_a_users_counters_and_released_markers_share_a_slot_and_users_spread() -> None:
    rules = (
        LimitRule(1, 1, None, None, Period.DAILY, 10_000, None, currency="THB"),
        LimitRule(2, 1, None, None, Period.MONTHLY, 90_000, 5, currency="THB"),
    )
    slots_of_users = set()
    for sender in range(1000, 1040):
        intent = _intent(sender)
        keys = [released_key(intent), *(counter.key for counter in counters_for(intent, rules))]
        assert len(keys) == 3 and len({key_slot(key.encode()) for key in keys}) == 1
        slots_of_users.add(key_slot(keys[0].encode()))
    assert len(slots_of_users) > 30


def test_a_read_nonce_shares_its_markers_slot_and_the_markers_spread() -> None:
    for key_id in (f"pmk_{n:016x}" for n in range(50)):
        assert key_slot(nonce_key(key_id, "a" * 32).encode()) == key_slot(nonce_marker_key(key_id).encode())
        assert nonce_marker_key(key_id) in nonce_marker_keys()
    assert len({key_slot(marker.encode()) for marker in nonce_marker_keys()}) == len(nonce_marker_keys()) == 16
