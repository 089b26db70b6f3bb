"""The benchmark's open loop (bench/open_loop.py) and layouts (bench/layouts.py): sends when due whatever
the answers, and counts latency from when an intent was due."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest

from bench import layouts, open_loop


def test_the_schedule_spaces_the_sends_evenly_at_the_rate() -> None:
    due = open_loop.schedule(1000, 2.0, start_s=100.0)
    assert len(due) == 2000
    assert due[0] == 100.0 and due[1] == pytest.approx(100.001) and due[-1] == pytest.approx(101.999)
    with pytest.raises(ValueError):
        open_loop.schedule(0, 1.0, start_s=0.0)


class SlowConnection:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_slow_answer_does_not_delay_the_next_send() -> None:
    # Each answer takes 200 ms; 20 sends due 10 ms apart must all go out within ~200 ms, on new connections.
    sent_at: dict[int, float] = {}
    connections: list[SlowConnection] = []

    def connect() -> SlowConnection:
        connections.append(SlowConnection())
        return connections[-1]

    async def send(connection: SlowConnection, index: int) -> None:
        sent_at[index] = time.time()
        await asyncio.sleep(0.2)

    start = time.time() + 0.01
    due = open_loop.schedule(100, 0.2, start_s=start)
    result = await open_loop.send_open_loop(due, connect, send)
    assert sorted(sent_at) == list(range(20))
    assert max(sent_at.values()) - start < 0.2 + 0.1  # a closed loop of one would take 4 s
    assert result.connections_opened == len(connections) > 1
    assert all(connection.closed for connection in connections)
    assert len(result.send_lag_s) == 20


async def test_more_in_flight_than_the_client_allows_fails_the_run() -> None:
    async def send(connection: SlowConnection, index: int) -> None:
        await asyncio.sleep(1.0)

    due = open_loop.schedule(1000, 0.01, start_s=time.time())
    with pytest.raises(open_loop.ClientBehind):
        await open_loop.send_open_loop(due, SlowConnection, send, connections_max=3)


def test_layouts_parse_and_expand() -> None:
    assert layouts.parse_layouts("all, per-core,all") == ["all", "per-core"]
    with pytest.raises(ValueError):
        layouts.parse_layouts("all,bogus")
    procfile = {"gateway": 1, "settlement": 2}
    assert layouts.layout_counts("one-per-type", procfile) == procfile
    assert layouts.layout_counts("per-core", procfile, cores=2) == {"all": 2, "psp-sim": 1}
    grouped = layouts.layout_counts("two-groups", procfile)
    stages = [name for process_type in grouped for name in process_type.split(",")]
    for stage in ("validation", "fees", "limits", "dispatch", "settlement", "history", "poller"):
        assert stages.count(stage) == 1  # every stage runs, and once


def test_the_mix_holds_exactly_in_every_hundred_intents() -> None:
    from bench import mix

    chosen = mix.parse_mix("p2p=70,ipps=20,qp=10")
    kinds = [mix.kind_of(index, chosen) for index in range(300, 400)]
    assert (kinds.count("p2p"), kinds.count("ipps"), kinds.count("qp")) == (70, 20, 10)
    user, body = mix.intent_body(95, senders=10, mix=chosen)
    assert body["operation_type"] == "QP_TOPUP" and "recipient_id" not in body and user == mix.SENDER_ID_BASE + 5
    assert mix.intent_body(80, senders=10, mix=chosen)[1]["destination_ref"] == mix.DESTINATION_REF
    assert str(body["amount_minor"]).endswith("00")  # the simulator's behaviour: succeeds at once
    for bad in ("p2p=70,ipps=20", "wire=100", "p2p=x"):
        with pytest.raises(ValueError):
            mix.parse_mix(bad)


def test_pm_cpu_counts_the_fleet_and_servers_not_the_client_or_the_rest_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend("bench")  # pipeline.py imports its siblings as a script does
    from bench import pipeline

    cpu = {"gateway": 2.0, "settlement": 1.5, "postgres": 3.0, "valkey": 0.5, pipeline.CLIENT: 1.25}
    cpu[pipeline.MACHINE] = 9.0
    cpu[pipeline.OTHER] = 0.75
    assert pipeline.pm_cpu_seconds(cpu) == 7.0


def test_latency_by_hop_follows_each_intents_versions_from_its_post(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend("bench")
    from bench import pipeline

    at = datetime.datetime.fromtimestamp
    # Two intents; the rows come in no particular order and two of one intent's events share a time
    # (one commit): the version, not the time or the state's name, orders them.
    rows = [
        {"intent_id": "b", "version": 2, "created_at": at(1000.030), "state": "VALIDATED"},
        {"intent_id": "a", "version": 3, "created_at": at(1000.050), "state": "AUTHORIZED"},
        {"intent_id": "a", "version": 1, "created_at": at(1000.010), "state": "CREATED"},
        {"intent_id": "b", "version": 1, "created_at": at(1000.006), "state": "CREATED"},
        {"intent_id": "a", "version": 2, "created_at": at(1000.050), "state": "VALIDATED"},
    ]
    sent = pipeline.SendResult(started_at={"a": 1000.0, "b": 1000.002}, first_post_at=1000.0, last_accepted_at=1000.01)

    hops = pipeline.latency_by_hop(rows, sent)

    assert list(hops) == ["POST->CREATED", "CREATED->VALIDATED", "VALIDATED->AUTHORIZED"]
    assert hops["POST->CREATED"] == {"p50_ms": 4.0, "p99_ms": 10.0}
    assert hops["CREATED->VALIDATED"] == {"p50_ms": 24.0, "p99_ms": 40.0}
    assert hops["VALIDATED->AUTHORIZED"] == {"p50_ms": 0.0, "p99_ms": 0.0}
