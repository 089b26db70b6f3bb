"""Proves the PSP simulator's API contract over real sockets: the simulator on a port of its own and a small
receiver app standing in for PM's callback endpoint. Every behaviour row (00, 13, 21, 22, 23, 24, 25, 26)
for both providers, signatures checked with pm.domain.psp_signing.verify (and refused for 25), idempotency and
409, 401, 400, 404, 503 when full, retries with backoff on a 500 answer, at most 6 attempts, and
`run_psp_sim` serving on its configured port. Time-outs far in the future (holds, expiries) are reached
by moving the simulator's clock, not by waiting."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pm.config.settings import Settings
from pm.dev.psp_sim import SIMULATOR, SteppableClock, create_sim_app, run_psp_sim
from pm.domain import psp_signing
from tests.support.ports import free_port

DELAY_MS = 50
DELAY_S = DELAY_MS / 1000
API_KEY = "test-api-key-0123"
IPPS_SECRET = "test-ipps-callback-secret"
QP_SECRET = "test-qp-callback-secret-0"
SECRETS = {"ipps": IPPS_SECRET, "qp": QP_SECRET}
SUCCESS = {"ipps": "SUCCEEDED", "qp": "PAID"}
INITIAL = {"ipps": "PROCESSING", "qp": "PENDING"}
PATHS = {"ipps": "/ipps/v1/payouts", "qp": "/qp/v1/payment-requests"}
WAIT_S = 3.0
# Long enough for any callback planned at the delay to have arrived, were it sent.
QUIET_S = 6 * DELAY_S

pytestmark = pytest.mark.timeout(60)


def sim_settings(**overrides: Any) -> Settings:
    return Settings(
        psp_api_key=API_KEY,
        psp_ipps_callback_secret=IPPS_SECRET,
        psp_qp_callback_secret=QP_SECRET,
        psp_sim_delay_ms=DELAY_MS,
        **overrides,
    )


@dataclass
class Received:
    body: bytes
    signature: str | None
    received_at_s: float

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """PM's callback endpoint, played: records every callback, answers 500 to the first N of a reference."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(body, request.headers.get(psp_signing.SIGNATURE_HEADER), time.time()))
        reference = orjson.loads(body)["reference"]
        if self.failures_left.get(reference, 0) > 0:
            self.failures_left[reference] -= 1
            return web.Response(status=500)
        return web.Response(status=204)

    def of(self, reference: str) -> list[Received]:
        return [r for r in self.received if r.json["reference"] == reference]

    async def wait_for(self, reference: str, count: int) -> list[Received]:
        deadline = time.monotonic() + WAIT_S
        while len(self.of(reference)) < count:
            assert time.monotonic() < deadline, f"{reference}: {len(self.of(reference))} callbacks, wanted {count}"
            await asyncio.sleep(0.01)
        return self.of(reference)


@dataclass
class Sim:
    url: str
    clock: SteppableClock
    http: aiohttp.ClientSession
    receiver: Receiver
    app: web.Application

    async def create(self, provider: str, amount_minor: int, **fields: Any) -> tuple[str, int, dict[str, Any]]:
        reference = fields.pop("reference", f"ref-{uuid.uuid4().hex}")
        body = {
            "reference": reference,
            "amount_minor": amount_minor,
            "currency": "THB",
            "callback_url": f"{self.receiver.url}/psp/{provider}/callback",
            **({"destination_ref": "tok_dest_1"} if provider == "ipps" else {"expires_in_s": 600}),
            **fields,
        }
        status, answer = await self.post(PATHS[provider], body)
        return reference, status, answer

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.http.post(
            f"{self.url}{path}", data=data, headers=self.auth if headers is None else headers
        ) as response:
            return response.status, await response.json()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.get(f"{self.url}{path}", headers=self.auth if headers is None else headers) as response:
            return response.status, await response.json()

    async def status_of(self, provider: str, reference: str) -> tuple[int, Any]:
        return await self.get(f"{PATHS[provider]}/{reference}")

    async def events(self, reference: str) -> list[dict[str, Any]]:
        status, answer = await self.get(f"/sim/v1/events?reference={reference}", headers={})
        assert status == 200
        return answer["items"]

    auth: ClassVar[dict[str, str]] = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    receiver = Receiver()
    receiver_app = web.Application()
    receiver_app.router.add_post("/psp/{provider}/callback", receiver.handle)
    clock = SteppableClock()
    app = create_sim_app(sim_settings(), clock=clock)
    async with (
        TestServer(receiver_app, host="127.0.0.1") as receiver_server,
        TestServer(app, host="127.0.0.1") as sim_server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        receiver.url = str(receiver_server.make_url("")).rstrip("/")
        yield Sim(str(sim_server.make_url("")).rstrip("/"), clock, http, receiver, app)


def assert_signed(callback: Received, provider: str, *, genuine: bool = True) -> None:
    now_s = time.time() + 3600  # the clock may have been moved forward by up to an hour
    valid = psp_signing.verify([SECRETS[provider]], callback.signature, callback.body, now_s, tolerance_s=7200)
    assert valid is genuine, callback.signature
    other = "qp" if provider == "ipps" else "ipps"
    assert not psp_signing.verify([SECRETS[other]], callback.signature, callback.body, now_s, tolerance_s=7200)


def occurred_at_s(callback: Received) -> float:
    text = callback.json["occurred_at"]
    assert text.endswith("Z")
    return datetime.fromisoformat(text).timestamp()


# -- 00-09: success after the delay ----------------------------------------------------------------


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_00_succeeds_after_the_delay_with_one_signed_callback(sim: Sim, provider: str) -> None:
    created_s = time.time()
    reference, status, answer = await sim.create(provider, 50000)
    assert status == 201
    expected = {"reference": reference, "status": INITIAL[provider], "created": True}
    if provider == "qp":
        assert isinstance(answer.pop("qr_payload"), str)
    assert answer == expected
    assert (await sim.status_of(provider, reference))[1]["status"] == INITIAL[provider]

    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert callback.received_at_s - created_s >= DELAY_S
    assert_signed(callback, provider)
    body = callback.json
    assert len(body.pop("event_id")) == 32
    assert created_s - 1 <= occurred_at_s(callback) <= time.time()
    body.pop("occurred_at")
    assert body == {
        "provider": provider,
        "reference": reference,
        "status": SUCCESS[provider],
        "amount_minor": 50000,
        "currency": "THB",
    }
    assert await sim.status_of(provider, reference) == (
        200,
        {"reference": reference, "status": SUCCESS[provider], "amount_minor": 50000, "currency": "THB"},
    )
    await asyncio.sleep(QUIET_S)
    assert len(sim.receiver.of(reference)) == 1
    (event,) = await sim.events(reference)
    assert event["event_id"] == callback.json["event_id"]
    assert (event["status"], event["attempt"], event["answered_status"]) == (SUCCESS[provider], 1, 204)


# -- 13: declined / never paid ---------------------------------------------------------------------


async def test_13_declines_a_payout(sim: Sim) -> None:
    reference, status, _ = await sim.create("ipps", 50013)
    assert status == 201
    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert_signed(callback, "ipps")
    assert callback.json["status"] == "DECLINED"
    assert (await sim.status_of("ipps", reference))[1]["status"] == "DECLINED"


async def test_13_a_payment_request_stays_pending_then_expires(sim: Sim) -> None:
    reference, status, _ = await sim.create("qp", 50013, expires_in_s=120)
    assert status == 201
    await asyncio.sleep(QUIET_S)
    assert sim.receiver.of(reference) == []
    assert (await sim.status_of("qp", reference))[1]["status"] == "PENDING"
    sim.clock.advance(120)
    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert_signed(callback, "qp")
    assert callback.json["status"] == "EXPIRED"
    assert (await sim.status_of("qp", reference))[1]["status"] == "EXPIRED"


# -- 21: silent, the status tells the truth --------------------------------------------------------


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_21_never_calls_back_but_the_status_answers_success(sim: Sim, provider: str) -> None:
    reference, status, _ = await sim.create(provider, 50021)
    assert status == 201
    await asyncio.sleep(QUIET_S)
    assert sim.receiver.of(reference) == []
    assert await sim.events(reference) == []
    assert (await sim.status_of(provider, reference))[1]["status"] == SUCCESS[provider]


# -- 22: the same event twice ----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_22_delivers_the_same_event_twice(sim: Sim, provider: str) -> None:
    reference, _, _ = await sim.create(provider, 50022)
    first, second = await sim.receiver.wait_for(reference, 2)
    assert first.body == second.body
    assert first.json["status"] == SUCCESS[provider]
    assert_signed(first, provider)
    assert_signed(second, provider)
    await asyncio.sleep(QUIET_S)
    assert len(sim.receiver.of(reference)) == 2
    assert [event["delivery"] for event in await sim.events(reference)] == [1, 2]


# -- 23: success, then a stale event ---------------------------------------------------------------


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_23_sends_a_stale_event_after_the_success(sim: Sim, provider: str) -> None:
    reference, _, _ = await sim.create(provider, 50023)
    success, stale = await sim.receiver.wait_for(reference, 2)
    assert (success.json["status"], stale.json["status"]) == (SUCCESS[provider], INITIAL[provider])
    assert success.json["event_id"] != stale.json["event_id"]
    assert occurred_at_s(stale) < occurred_at_s(success)
    assert_signed(success, provider)
    assert_signed(stale, provider)
    assert (await sim.status_of(provider, reference))[1]["status"] == SUCCESS[provider]


# -- 24: success only after PM's hold expired ------------------------------------------------------


async def test_24_pays_out_five_seconds_after_the_hold_expired(sim: Sim) -> None:
    hold_expires_at = int(sim.clock.now_s()) + 60
    reference, status, _ = await sim.create("ipps", 50024, hold_expires_at=hold_expires_at)
    assert status == 201
    await asyncio.sleep(QUIET_S)
    assert sim.receiver.of(reference) == []
    sim.clock.advance(hold_expires_at + 4.3 - sim.clock.now_s())  # the hold expired, but not five seconds ago
    await asyncio.sleep(QUIET_S)
    assert sim.receiver.of(reference) == []
    assert (await sim.status_of("ipps", reference))[1]["status"] == "PROCESSING"
    sim.clock.advance(1.5)
    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert callback.json["status"] == "SUCCEEDED"
    assert occurred_at_s(callback) >= hold_expires_at + 5
    assert_signed(callback, "ipps")
    assert (await sim.status_of("ipps", reference))[1]["status"] == "SUCCEEDED"


async def test_24_without_a_hold_pays_out_after_ten_delays(sim: Sim) -> None:
    created_s = time.time()
    reference, _, _ = await sim.create("ipps", 50024)
    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert callback.received_at_s - created_s >= 10 * DELAY_S
    assert callback.json["status"] == "SUCCEEDED"


async def test_24_pays_a_payment_request_after_it_expired(sim: Sim) -> None:
    reference, _, _ = await sim.create("qp", 50024, expires_in_s=30)
    sim.clock.advance(34)
    await asyncio.sleep(QUIET_S)
    assert sim.receiver.of(reference) == []
    assert (await sim.status_of("qp", reference))[1]["status"] == "PENDING"
    sim.clock.advance(1.5)
    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert callback.json["status"] == "PAID"
    assert_signed(callback, "qp")


# -- 25: a callback signed with a wrong secret -----------------------------------------------------


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_25_signs_the_callback_with_a_wrong_secret(sim: Sim, provider: str) -> None:
    reference, _, _ = await sim.create(provider, 50025)
    (callback,) = await sim.receiver.wait_for(reference, 1)
    assert callback.json["status"] == SUCCESS[provider]
    assert callback.signature is not None and callback.signature.startswith("t=")
    assert_signed(callback, provider, genuine=False)
    assert (await sim.status_of(provider, reference))[1]["status"] == SUCCESS[provider]


# -- 26: status queries fail twice -----------------------------------------------------------------


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_26_status_answers_503_twice_then_the_truth(sim: Sim, provider: str) -> None:
    reference, _, _ = await sim.create(provider, 50026)
    other, _, _ = await sim.create(provider, 70026)
    await asyncio.sleep(QUIET_S)
    assert sim.receiver.of(reference) == []
    assert await sim.status_of(provider, reference) == (503, {"error": "unavailable"})
    assert await sim.status_of(provider, reference) == (503, {"error": "unavailable"})
    assert await sim.status_of(provider, reference) == (
        200,
        {"reference": reference, "status": SUCCESS[provider], "amount_minor": 50026, "currency": "THB"},
    )
    assert (await sim.status_of(provider, reference))[0] == 200
    assert (await sim.status_of(provider, other))[0] == 503  # counted per reference


# -- idempotency, errors ---------------------------------------------------------------------------


async def test_a_repeated_payout_is_idempotent_and_a_reused_reference_conflicts(sim: Sim) -> None:
    reference, status, _ = await sim.create("ipps", 50000)
    assert status == 201
    _, status, answer = await sim.create("ipps", 50000, reference=reference, callback_url=f"{sim.receiver.url}/x")
    assert (status, answer) == (200, {"reference": reference, "status": "PROCESSING", "created": False})
    await sim.receiver.wait_for(reference, 1)
    _, status, answer = await sim.create("ipps", 50000, reference=reference)
    assert (status, answer) == (200, {"reference": reference, "status": "SUCCEEDED", "created": False})
    for change in ({"amount_minor": 50001}, {"destination_ref": "tok_other"}):
        fields = {"amount_minor": 50000, **change}
        _, status, answer = await sim.create("ipps", fields.pop("amount_minor"), reference=reference, **fields)
        assert (status, answer) == (409, {"error": "reference_reused"})
    await asyncio.sleep(QUIET_S)
    assert len(sim.receiver.of(reference)) == 1  # a repeat plans nothing new


async def test_a_repeated_payment_request_is_idempotent_and_a_reused_reference_conflicts(sim: Sim) -> None:
    reference, status, first = await sim.create("qp", 100000)
    assert status == 201
    _, status, answer = await sim.create("qp", 100000, reference=reference)
    assert status == 200
    assert answer["created"] is False and answer["qr_payload"] == first["qr_payload"]
    _, status, answer = await sim.create("qp", 100001, reference=reference)
    assert (status, answer) == (409, {"error": "reference_reused"})
    # The providers' references are separate namespaces.
    _, status, _ = await sim.create("ipps", 100001, reference=reference)
    assert status == 201


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0000"}, {"Authorization": API_KEY}, {"Authorization": f"bearer {API_KEY}"},
     {"Authorization": f"Bearer {API_KEY}x"}, {"Authorization": f"Bearer {API_KEY}é"}],
)  # fmt: skip
async def test_a_request_without_the_api_key_is_unauthorized(sim: Sim, headers: dict[str, str]) -> None:
    body = {"reference": "r-1", "amount_minor": 100, "currency": "THB", "callback_url": "http://h/cb"}
    for path in PATHS.values():
        assert await sim.post(path, {**body, "destination_ref": "t", "expires_in_s": 60}, headers) == (
            401,
            {"error": "unauthorized"},
        )
        assert await sim.get(f"{path}/r-1", headers) == (401, {"error": "unauthorized"})
    assert sim.app[SIMULATOR].payments == {}


@pytest.mark.parametrize("provider", ["ipps", "qp"])
async def test_a_malformed_request_is_refused_with_400(sim: Sim, provider: str) -> None:
    status, answer = await sim.post(PATHS[provider], b"{not json")
    assert (status, answer["error"]) == (400, "invalid_json")
    status, answer = await sim.post(PATHS[provider], [1, 2])
    assert (status, answer["error"]) == (400, "invalid_body")
    _, status, answer = await sim.create(provider, 0)
    assert (status, answer["error"]) == (400, "invalid_amount_minor")
    _, status, answer = await sim.create(provider, 100, currency="USD")
    assert (status, answer["error"]) == (400, "invalid_currency")
    _, status, answer = await sim.create(provider, 100, reference="has space")
    assert (status, answer["error"]) == (400, "invalid_reference")
    _, status, answer = await sim.create(provider, 100, callback_url="not-a-url")
    assert (status, answer["error"]) == (400, "invalid_callback_url")
    assert sim.app[SIMULATOR].payments == {}


async def test_an_unknown_reference_is_not_found(sim: Sim) -> None:
    for path in PATHS.values():
        assert await sim.get(f"{path}/never-created") == (404, {"error": "not_found"})
        assert await sim.get(f"{path}/{'x' * 65}") == (404, {"error": "not_found"})


async def test_a_full_simulator_refuses_new_payments_with_503(sim: Sim) -> None:
    sim.app[SIMULATOR].payments_max = 2
    reference, status, _ = await sim.create("ipps", 50021)
    assert status == 201
    assert (await sim.create("qp", 50021))[1] == 201
    assert (await sim.create("ipps", 50021))[1:] == (503, {"error": "full"})
    assert (await sim.create("ipps", 50021, reference=reference))[1] == 200  # a repeat still answers


# -- callback retries ------------------------------------------------------------------------------


async def test_a_500_answer_is_retried_with_the_same_event_and_doubling_backoff(sim: Sim) -> None:
    reference = f"ref-{uuid.uuid4().hex}"
    sim.receiver.failures_left[reference] = 2
    await sim.create("ipps", 50000, reference=reference)
    first, second, third = await sim.receiver.wait_for(reference, 3)
    assert first.body == second.body == third.body
    assert second.received_at_s - first.received_at_s >= 0.5
    assert third.received_at_s - second.received_at_s >= 1.0
    for callback in (first, second, third):
        assert_signed(callback, "ipps")
    events = await sim.events(reference)
    assert [(e["attempt"], e["answered_status"]) for e in events] == [(1, 500), (2, 500), (3, 204)]
    assert len({e["event_id"] for e in events}) == 1


async def test_an_unreachable_receiver_gets_at_most_six_attempts(sim: Sim) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/cb"  # a port nobody listens on
    reference, status, _ = await sim.create("qp", 50000, callback_url=dead_url)
    assert status == 201
    deadline = time.monotonic() + WAIT_S
    while len(await sim.events(reference)) < 6:
        assert time.monotonic() < deadline, await sim.events(reference)
        sim.clock.advance(10)  # past any backoff
        await asyncio.sleep(0.02)
    for _ in range(5):
        sim.clock.advance(100)
        await asyncio.sleep(0.02)
    events = await sim.events(reference)
    assert [e["attempt"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(e["answered_status"] is None and e["error"] for e in events)


async def test_creating_a_payout_does_not_wait_for_its_callbacks(sim: Sim) -> None:
    reference = f"ref-{uuid.uuid4().hex}"
    sim.receiver.failures_left[reference] = 5
    _, status, _ = await sim.create("ipps", 50000, reference=reference)
    assert status == 201
    # A create that waited for its callbacks would return only after one was answered (here: after six
    # attempts); a wall-clock bound instead failed on a busy CI machine (0.28 s against the 50 ms delay).
    assert sim.receiver.of(reference) == []
    assert len(await sim.receiver.wait_for(reference, 1)) == 1  # it is still sent, afterwards


# -- run_psp_sim -----------------------------------------------------------------------------------


async def test_run_psp_sim_serves_on_its_configured_port_until_cancelled() -> None:
    port = free_port()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_psp_sim(sim_settings(psp_sim_port=port), started=listening.set_result))
    try:
        url = await asyncio.wait_for(listening, 5)
        assert url == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"{url}/sim/v1/health") as response:
                assert (response.status, await response.json()) == (200, {"status": "ok"})
            body = {"reference": "run-1", "amount_minor": 500, "currency": "THB", "callback_url": "http://h/cb",
                    "expires_in_s": 60}  # fmt: skip
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with http.post(f"{url}/qp/v1/payment-requests", json=body, headers=headers) as response:
                assert response.status == 201
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the port is closed again
