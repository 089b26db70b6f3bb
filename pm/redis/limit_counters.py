"""Limit counters in Redis: reserve places for a batch of intents atomically, give them back, and rebuild
a missing counter from PostgreSQL, the truth (DESIGN.md §6).

    reservations = await reserve(redis, pool, [(intent, counters_for(intent, rules)), ...])
    await release(redis, [(intent, counters_for(intent, rules)), ...])     # intents that ended refused

A counter is a hash (pm/domain/limits.py names it, by user, currency, rule, version and period): `_amount`
and `_count` of the places taken, and one field per intent holding a place, intent id -> amount. Every
function here takes the intents themselves, so their currency travels with them: the reservation, the
give-back of a refused intent and the rebuild all derive the same per-currency counters (`counters_for`),
and the rebuild counts only intents in the counter's currency. A place is *firm* (the limits stage admitted
the intent) or *provisional* (value `p<amount>`: a rebuild counted an intent still PRICED that another batch
is about to check, or has admitted without having committed CLEARED yet). Counting those is what keeps the
cap exact across a rebuild: a stage may have admitted an intent against the old counter just before it
vanished. A provisional intent is checked like any other when its turn comes (against the sum without it),
then made firm, or dropped with the refusal; a release drops it too if it ends refused.

One round trip per batch: one call of RESERVE_SCRIPT. Only when counters are missing (Redis restarted,
flushed, the period or the rule is new) does it answer MISSING for those intents; then one SQL query
counts their periods and a second call sets each counter from it *only if still missing* (so stages
rebuilding at once cannot count twice) and decides. Scripts touch many users' keys in one call: a
standalone Redis or Valkey, not a cluster.

RESERVE_SCRIPT
    KEYS  per intent: its released marker, then its counters' keys
    ARGV  [1] released-marker prefix, [2] number of intents, then per intent:
            intent id, amount_minor, number of counters n, then n times:
              max_amount_minor, count capped (1) or not (0), max_count (0 when not capped),
              expire-at (unix s), m (-1: no rebuild data),
              then m times: member intent id, member amount_minor, firm (1) or provisional (0)
    reply per intent [status, counter index (1-based; 0: none), remaining amount_minor (>= 0),
                      count capped (1) or not (0), remaining count (>= 0; 0 when not capped)]
          RESERVED  places taken now in every counter (all or nothing)
          HELD      the intent already held a firm place in every counter (a redelivery): nothing changed
          EXCEEDED  a counter would pass its cap: nothing taken; which one and what remains without it
                    (never below 0: a rebuilt counter may hold more than a cap tightened since, or than
                    the cap when it counted intents still queued; it remains 0 then)
          MISSING   a counter does not exist and no rebuild data came for it: nothing done
          RELEASED  the intent's places were given back already (it is final): nothing taken
RELEASE_SCRIPT
    KEYS  per intent: its released marker, then its counters' keys
    ARGV  [1] marker time-to-live (s), [2] number of intents, then per intent: intent id, number of counters
    reply the number of places given back; every intent's marker is set (idempotent)
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from pm.config.constants import (
    LIMIT_COUNTER_TTL_S_MIN,
    LIMIT_RELEASED_KEY_PREFIX,
    LIMIT_RELEASED_TTL_S,
)
from pm.config.settings import Settings
from pm.domain.intent import Intent, State
from pm.domain.limits import Counter, LimitRule, Member, counters_for, is_limited, released_key
from pm.redis.wire import is_cluster

RESERVE_SCRIPT = """
local released_prefix = ARGV[1]
local intent_total = tonumber(ARGV[2])

local function rebuild(key, first, member_total, expire_at)
  redis.call('HSET', key, '_amount', 0, '_count', 0)
  -- A member's released marker carries the counter's hash tag (its user): the same slot on a cluster.
  local tag = string.match(key, '{[^}]*}')
  for j = first, first + 3 * (member_total - 1), 3 do
    local member = ARGV[j]
    if redis.call('EXISTS', released_prefix .. tag .. ':' .. member) == 0 then
      local amount = ARGV[j + 1]
      if ARGV[j + 2] == '1' then
        redis.call('HSET', key, member, amount)
      else
        redis.call('HSET', key, member, 'p' .. amount)
      end
      redis.call('HINCRBY', key, '_amount', amount)
      redis.call('HINCRBY', key, '_count', 1)
    end
  end
  redis.call('EXPIREAT', key, expire_at)
end

local function drop_provisional(intent_id, counters, seen)
  for c, counter in ipairs(counters) do
    if seen[c].state == 'provisional' then
      redis.call('HDEL', counter.key, intent_id)
      redis.call('HINCRBY', counter.key, '_amount', '-' .. seen[c].held_amount)
      redis.call('HINCRBY', counter.key, '_count', -1)
    end
  end
end

local function decide(intent_id, amount_text, released, counters)
  if redis.call('EXISTS', released) == 1 then
    return {'RELEASED', 0, 0, 0, 0}
  end
  local amount = tonumber(amount_text)
  local seen = {}
  for c, counter in ipairs(counters) do
    local values = redis.call('HMGET', counter.key, intent_id, '_amount', '_count')
    if not values[2] then
      return {'MISSING', c, 0, 0, 0}
    end
    local entry = {state = 'absent', total = tonumber(values[2]), count = tonumber(values[3])}
    if values[1] then
      if string.sub(values[1], 1, 1) == 'p' then
        -- Counted by a rebuild already: the sum without it is what the check needs.
        entry.state = 'provisional'
        entry.held_amount = string.sub(values[1], 2)
        entry.total = entry.total - tonumber(entry.held_amount)
        entry.count = entry.count - 1
      else
        entry.state = 'firm'
      end
    end
    seen[c] = entry
  end
  local changes = false
  for c, counter in ipairs(counters) do
    local entry = seen[c]
    if entry.state ~= 'firm' then
      changes = true
      local over_count = counter.count_capped and entry.count + 1 > counter.max_count
      if entry.total + amount > counter.max_amount or over_count then
        drop_provisional(intent_id, counters, seen)
        -- "Capped" travels apart from what remains, and what remains is never negative: a counter
        -- rebuilt above its cap has 0 left (a negative count once read as "no cap" and stopped the stage).
        local remaining_count, capped = 0, 0
        if counter.count_capped then
          remaining_count, capped = math.max(counter.max_count - entry.count, 0), 1
        end
        return {'EXCEEDED', c, math.max(counter.max_amount - entry.total, 0), capped, remaining_count}
      end
    end
  end
  if not changes then
    return {'HELD', 0, 0, 0, 0}
  end
  for c, counter in ipairs(counters) do
    local state = seen[c].state
    if state == 'absent' then
      redis.call('HSET', counter.key, intent_id, amount_text)
      redis.call('HINCRBY', counter.key, '_amount', amount_text)
      redis.call('HINCRBY', counter.key, '_count', 1)
    elseif state == 'provisional' then
      redis.call('HSET', counter.key, intent_id, amount_text)
    end
    redis.call('EXPIREAT', counter.key, counter.expire_at)
  end
  return {'RESERVED', 0, 0, 0, 0}
end

local a, k = 3, 1
local results = {}
for i = 1, intent_total do
  local intent_id, amount_text, counter_total = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local released = KEYS[k]
  k = k + 1
  local counters = {}
  for c = 1, counter_total do
    local counter = {key = KEYS[k], max_amount = tonumber(ARGV[a]), count_capped = ARGV[a + 1] == '1',
                     max_count = tonumber(ARGV[a + 2]), expire_at = ARGV[a + 3]}
    local member_total = tonumber(ARGV[a + 4])
    a = a + 5
    k = k + 1
    if member_total >= 0 then
      if redis.call('EXISTS', counter.key) == 0 then
        rebuild(counter.key, a, member_total, counter.expire_at)
      end
      a = a + 3 * member_total
    end
    counters[c] = counter
  end
  results[i] = decide(intent_id, amount_text, released, counters)
end
return results
"""

RELEASE_SCRIPT = """
local released_ttl_s = ARGV[1]
local intent_total = tonumber(ARGV[2])
local a, k = 3, 1
local places_released = 0
for i = 1, intent_total do
  local intent_id, counter_total = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local released = KEYS[k]
  k = k + 1
  for c = 1, counter_total do
    local key = KEYS[k]
    k = k + 1
    local held = redis.call('HGET', key, intent_id)
    if held then
      if string.sub(held, 1, 1) == 'p' then
        held = string.sub(held, 2)
      end
      redis.call('HDEL', key, intent_id)
      redis.call('HINCRBY', key, '_amount', '-' .. held)
      redis.call('HINCRBY', key, '_count', -1)
      places_released = places_released + 1
    end
  end
  redis.call('SET', released, '1', 'EX', released_ttl_s)
end
return places_released
"""

# Past the limits stage and not refused: firm places. PRICED (and not given up on): provisional ones.


class ReplicationLagError(redis.exceptions.TimeoutError):
    """Fewer replicas than asked for acknowledged a reservation or release in time: it is not acted upon
    (a Redis outage for the stage: the batch is retried, its delivery uncounted; every call is idempotent)."""


@dataclass(frozen=True, slots=True)
class Durability:
    """`replicas` > 0: each script call is followed, on its connection, by `WAIT replicas timeout_ms`, and
    its answer counts only once that many replicas have it (PM_REDIS_LIMITS_WAIT_REPLICAS). Redis replicates
    asynchronously: without it a failover to a replica that missed the last reservations would keep a
    counter that lacks them (it is not missing, so nothing rebuilds it) and let a cap be overrun by them."""

    replicas: int = 0
    timeout_ms: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> Durability:
        return cls(settings.redis_limits_wait_replicas, settings.redis_limits_wait_timeout_ms)

    def __post_init__(self) -> None:
        assert 0 <= self.replicas <= REPLICAS_WAITED_MAX and 1 <= self.timeout_ms <= WAIT_TIMEOUT_MS_MAX, self


REPLICAS_WAITED_MAX = 5
WAIT_TIMEOUT_MS_MAX = 5_000
NO_WAIT = Durability()


async def _run(redis: aioredis.Redis, script: AsyncScript, keys: list[str], arguments: list[str | int],
               durability: Durability) -> Any:  # fmt: skip
    """The script's reply; with `durability.replicas`, only once that many replicas acknowledged it."""
    if durability.replicas == 0:
        return await script(keys=keys, args=arguments)
    async with redis.pipeline(transaction=False) as pipe:  # one connection: WAIT counts its writes
        await script(keys=keys, args=arguments, client=pipe)
        pipe.execute_command("WAIT", durability.replicas, durability.timeout_ms)
        reply, acknowledged = await pipe.execute()
    if int(acknowledged) < durability.replicas:
        raise ReplicationLagError(
            f"{acknowledged} of {durability.replicas} Redis replicas acknowledged the limit counters'"
            f" write within {durability.timeout_ms} ms"
        )
    return reply


class ReservationStatus(enum.StrEnum):
    RESERVED = "RESERVED"
    HELD = "HELD"
    EXCEEDED = "EXCEEDED"
    MISSING = "MISSING"
    RELEASED = "RELEASED"


@dataclass(frozen=True, slots=True)
class Reservation:
    intent_id: uuid.UUID
    status: ReservationStatus
    exceeded: Counter | None = None
    remaining_amount_minor: int = 0
    remaining_count: int | None = None

    @property
    def admitted(self) -> bool:
        return self.status in (ReservationStatus.RESERVED, ReservationStatus.HELD)


Plan = tuple[Intent, list[Counter]]


# What PostgreSQL says each missing counter holds (pm/store/limit_members.py `rebuild_members`, bound to a
# pool): the truth a counter is rebuilt from.
Rebuild = Callable[[Sequence[Counter]], Awaitable[dict[str, list[Member]]]]


async def reserve(
    redis: aioredis.Redis, rebuild: Rebuild, plans: Sequence[Plan], durability: Durability = NO_WAIT
) -> dict[uuid.UUID, Reservation]:
    """Take every intent's places, all or nothing per intent, idempotent per intent id."""
    assert all(counters for _, counters in plans), "plan only intents that some rule limits"
    outcomes: dict[uuid.UUID, Reservation] = {}
    missing = _collect(outcomes, plans, await _call_reserve(redis, plans, {}, durability))
    if missing:
        members = await rebuild([counter for _, counters in missing for counter in counters])
        # The call's own PRICED intents are decided in it, in order, right after the rebuild: counting
        # them beforehand would only refuse the first of a user's queued intents instead of the last.
        deciding = {intent.id for intent, _ in missing}
        members = {key: [m for m in found if m.firm or m.intent_id not in deciding] for key, found in members.items()}
        still_missing = _collect(outcomes, missing, await _call_reserve(redis, missing, members, durability))
        assert not still_missing, "every missing counter came with its rebuild data"
    assert set(outcomes) == {intent.id for intent, _ in plans}
    return outcomes


async def release_refused(
    redis: aioredis.Redis, rules: Sequence[LimitRule], intents: Sequence[Intent], durability: Durability = NO_WAIT
) -> int:
    """Give back the places of the intents among `intents` that ended REJECTED or FAILED: one round trip.

    Every refused intent of a limited kind is marked released, even one that never reached the limits
    stage (cheaper than knowing), so a late redelivery of its limits entry can never take a place again."""
    refused = [i for i in intents if i.state in (State.REJECTED, State.FAILED) and is_limited(i)]
    if not refused:
        return 0
    return await release(redis, [(intent, counters_for(intent, rules)) for intent in refused], durability)


async def release(redis: aioredis.Redis, plans: Sequence[Plan], durability: Durability = NO_WAIT) -> int:
    """Give back the places of intents that ended REJECTED or FAILED; one round trip; idempotent."""
    if not plans:
        return 0
    assert all(intent.state in (State.REJECTED, State.FAILED) for intent, _ in plans)
    script = redis.register_script(RELEASE_SCRIPT)

    async def call(group: Sequence[Plan]) -> int:
        keys: list[str] = []
        arguments: list[str | int] = [LIMIT_RELEASED_TTL_S, len(group)]
        for intent, counters in group:
            keys.append(released_key(intent))
            keys.extend(counter.key for counter in counters)
            arguments.extend((str(intent.id), len(counters)))
        return int(await _run(redis, script, keys, arguments, durability))

    return sum(await asyncio.gather(*(call(group) for group in _slot_groups(redis, plans))))


def _slot_groups(redis: aioredis.Redis, plans: Sequence[Plan]) -> list[list[Plan]]:
    """The plans in one group on a single server; on a cluster, one group per hash slot (each user's keys
    share one), in their order."""
    if not is_cluster(redis):
        return [list(plans)]
    groups: dict[int, list[Plan]] = {}
    for plan in plans:
        groups.setdefault(redis.keyslot(released_key(plan[0])), []).append(plan)  # type: ignore[attr-defined]
    return list(groups.values())


async def _call_reserve(
    redis: aioredis.Redis, plans: Sequence[Plan], members: dict[str, list[Member]], durability: Durability
) -> list[list[bytes | int]]:
    """The script's reply per plan, in order: one call per slot group (`_slot_groups`), sent at once."""
    script = redis.register_script(RESERVE_SCRIPT)
    groups = _slot_groups(redis, plans)
    replies_by_group = await asyncio.gather(
        *(_run(redis, script, *_reserve_arguments(group, members), durability) for group in groups)
    )
    replies_by_id = {
        intent.id: reply
        for group, replies in zip(groups, replies_by_group, strict=True)
        for (intent, _), reply in zip(group, replies, strict=True)
    }
    assert len(replies_by_id) == len(plans), (len(replies_by_id), len(plans))
    return [replies_by_id[intent.id] for intent, _ in plans]


def _reserve_arguments(plans: Sequence[Plan], members: dict[str, list[Member]]) -> tuple[list[str], list[str | int]]:
    """RESERVE_SCRIPT's KEYS and ARGV for `plans` (module docstring)."""
    keys: list[str] = []
    arguments: list[str | int] = [LIMIT_RELEASED_KEY_PREFIX, len(plans)]
    sent: set[str] = set()  # rebuild data goes once per counter; the script rebuilds at its first sight
    expire_at_s_min = int(time.time()) + LIMIT_COUNTER_TTL_S_MIN
    for intent, counters in plans:
        keys.append(released_key(intent))
        arguments.extend((str(intent.id), intent.amount_minor, len(counters)))
        for counter in counters:
            keys.append(counter.key)
            rule = counter.rule
            capped = rule.max_count is not None
            arguments.extend(
                (
                    rule.max_amount_minor,
                    1 if capped else 0,
                    rule.max_count if rule.max_count is not None else 0,
                    max(counter.expire_at_s, expire_at_s_min),
                )
            )
            found = members.get(counter.key)
            if found is None or counter.key in sent:
                arguments.append(-1)
                continue
            sent.add(counter.key)
            arguments.append(len(found))
            for member in found:
                arguments.extend((str(member.intent_id), member.amount_minor, 1 if member.firm else 0))
    return keys, arguments


def _collect(
    outcomes: dict[uuid.UUID, Reservation], plans: Sequence[Plan], replies: list[list[bytes | int]]
) -> list[Plan]:
    """Record each decided intent's reservation; return the plans whose counters were missing."""
    missing = []
    for (intent, counters), reply in zip(plans, replies, strict=True):
        raw_status, index, remaining_amount, capped, remaining_count = reply
        status = ReservationStatus(raw_status.decode() if isinstance(raw_status, bytes) else raw_status)
        if status == ReservationStatus.MISSING:
            missing.append((intent, counters))
            continue
        if status != ReservationStatus.EXCEEDED:
            outcomes[intent.id] = Reservation(intent.id, status)
            continue
        exceeded = counters[int(index) - 1]
        # Paired with the arguments sent: the script says "capped" exactly for a rule with a count cap.
        assert (int(capped) == 1) == (exceeded.rule.max_count is not None), (exceeded.key, capped)
        assert int(remaining_amount) >= 0 and int(remaining_count) >= 0, (exceeded.key, reply)
        outcomes[intent.id] = Reservation(
            intent.id,
            status,
            exceeded,
            int(remaining_amount),
            int(remaining_count) if int(capped) == 1 else None,
        )
    return missing
