"""PSP money safety on real PostgreSQL, Valkey, the `postgres` ledger and the PSP simulator over HTTP, with
intents sent through the real gateway and the stages running in-process: a payment is submitted only by
its PSP connector, only while its hold is live and before the submit deadline (never by settlement, never
at the deadline); an expired hold never counts as held (a re-driven dispatch fails the intent EXPIRED);
QR payment requests and payouts are valid only until PM gives up (never past the hold); a forged callback
signed with the simulator's public secret moves no money at a gateway given none; and settlement asks a
PSP about an intent at most once per interval, however many entries name it. Every test checks balances
and the ledger (issue 10, items 2, 3, 4 and 9)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import channels
from consumers import dispatch, psp_connector, settlement
from consumers.main import running_stages
from consumers.runtime import StageRunner
from gateway.app import create_app, runner_options
from ledger import accounts
from ledger.check import run_check
from pm.client import PMClient
from pm.config.settings import Settings
from pm.dev.psp_sim import SIMULATOR, Simulator, create_sim_app
from pm.dev.psp_sim_behaviour import Provider
from pm.domain import psp_signing
from pm.domain.intent import OperationType, State, Transition
from pm.domain.psp import PspTimings
from pm.psp.client import PspClient
from pm.psp.secrets import SIMULATOR_QP_CALLBACK_SECRET, SIMULATOR_SETTINGS
from pm.redis import streams
from pm.store import intents as store
from pm.store import keys
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline
from tests.support.ports import free_port

APP_SCOPES = "intents:write,intents:read,balance:read"
APP_OPERATIONS = "P2P_TRANSFER,IPPS_WITHDRAWAL,THAI_QR_PAY,QP_TOPUP"
FUNDS_MINOR = 100_000


@dataclasses.dataclass
class World:
    """One test's pipeline, gateway, simulator and the two ways PM can find its PSPs."""

    pipeline: Pipeline
    app: PMClient
    sim: Simulator
    requests: list[tuple[str, str]]  # (method, path) of every request the simulator received
    reachable: PspClient
    unreachable: PspClient

    def use(self, psp: PspClient) -> None:
        self.pipeline.context.psp = psp

    def move_clock(self, seconds: float) -> None:
        """PM's clock (read against the ledger's hold timestamps) this far ahead of the real one."""
        self.pipeline.context.clock = lambda: time.time() + seconds

    def submitted(self, provider: Provider, intent_id: str) -> bool:
        return (provider, intent_id) in self.sim.payments

    def queries(self, intent_id: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith(f"/{intent_id}"))

    async def fund(self, user_id: int) -> None:
        """FUNDS_MINOR for the user, through the pipeline (its stages run for this alone)."""
        async with self.pipeline.stages():
            funding = await self.pipeline.fund(user_id, FUNDS_MINOR)
            await self.pipeline.wait_finished([funding.id])

    async def state(self, intent_id: str) -> tuple[str, str | None]:
        row = await self.pipeline.context.pool.fetchrow(
            "SELECT state, error_code FROM pm.intent WHERE id = $1::uuid", intent_id
        )
        return row["state"], row["error_code"]

    async def wait_state(self, intent_id: str, states: tuple[str, ...], timeout_s: float = 20.0) -> str:
        deadline_s = time.monotonic() + timeout_s
        while (state := (await self.state(intent_id))[0]) not in states:
            assert time.monotonic() < deadline_s, f"intent {intent_id} still {state}, not one of {states}"
            await asyncio.sleep(0.05)
        return state

    async def wait_for(self, condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0) -> None:
        deadline_s = time.monotonic() + timeout_s
        while not await condition():
            assert time.monotonic() < deadline_s, what
            await asyncio.sleep(0.05)

    async def assert_clean_ledger(self) -> None:
        """Transit back to zero, nothing pending anywhere, debits = credits: `pm ledger check`."""
        ledger = self.pipeline.context.ledger
        (transit,) = await ledger.lookup_accounts([accounts.transit("THB").id])
        assert (transit.debits_pending, transit.credits_pending) == (0, 0)
        assert transit.debits_posted == transit.credits_posted
        report = await run_check(ledger)
        assert report.ok, report.problems


@contextlib.asynccontextmanager
async def psp_world(
    fresh_database: Any, redis_url: str, *, hold_s: int, deadline_s: int, submit_s: int, query_interval_s: float = 0.2
) -> AsyncIterator[World]:
    """A pipeline whose PSP channels hold for `hold_s`, give up at `deadline_s` and submit until
    `submit_s` (all from the hold), with the simulator, a gateway on the same database and an app key."""
    gateway_port = free_port()
    timings = {
        **SIMULATOR_SETTINGS,
        "psp_hold_timeout_s": hold_s,
        "psp_outcome_deadline_s": deadline_s,
        "psp_submit_deadline_s": submit_s,
        "psp_request_timeout_s": 1.0,
        "psp_sim_delay_ms": 200,
        "public_url": f"http://127.0.0.1:{gateway_port}",
    }
    settings = Settings(**timings)
    requests: list[tuple[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        requests.append((request.method, request.path))
        return await handler(request)

    sim_app = create_sim_app(settings)
    sim_app.middlewares.append(record)
    topology = isolated_topology(stuck_after_s=1)
    async with (
        open_pipeline(fresh_database, redis_url, topology) as pipeline,
        TestServer(sim_app, host="127.0.0.1") as sim_server,
    ):
        for channel in channels.REGISTRY.values():
            channel.configure(PspTimings.from_settings(settings))
        base = str(sim_server.make_url("")).rstrip("/")
        reachable = PspClient(Settings(**timings, psp_ipps_url=f"{base}/ipps", psp_qp_url=f"{base}/qp"))
        unreachable = PspClient(
            Settings(**timings, psp_ipps_url="http://127.0.0.1:1/ipps", psp_qp_url="http://127.0.0.1:1/qp")
        )
        pipeline.context.psp_status_query_interval_s = query_interval_s
        app = create_app(
            settings, database_url=pipeline.database_url, redis_url=redis_url, ledger_url=pipeline.database_url,
            topology=topology,
        )  # fmt: skip
        gateway = TestServer(app, host="127.0.0.1", port=gateway_port)
        await gateway.start_server(**runner_options(settings))
        key, secret = await keys.create_key(pipeline.context.pool, "psp-safety", APP_SCOPES, operations=APP_OPERATIONS)
        try:
            async with PMClient(f"http://127.0.0.1:{gateway_port}", key.key_id, secret) as client:
                yield World(pipeline, client, sim_app[SIMULATOR], requests, reachable, unreachable)
        finally:
            pipeline.context.clock = time.time
            await gateway.close()
            await reachable.close()
            await unreachable.close()
            for channel in channels.REGISTRY.values():
                channel.configure(PspTimings.from_settings(Settings()))


@contextlib.asynccontextmanager
async def poller_running(world: World) -> AsyncIterator[None]:
    """The status poller alone (the stages run already)."""
    async with running_stages(world.pipeline.context, world.pipeline.redis_url, [], with_poller=True):
        yield


def new_user() -> int:
    return random.randrange(10**9, 2 * 10**9)


async def test_past_the_submit_deadline_a_payout_is_never_submitted_only_asked_about_then_voided(
    fresh_database, redis_url
) -> None:
    """The PSP is unreachable when the payout could be submitted; once it answers, the submit deadline has
    passed: nothing is ever submitted, settlement only asks (the PSP does not know it) and voids at the
    outcome deadline. The user keeps every satang, and nothing was paid out."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10) as world:
        user = new_user()
        await world.fund(user)
        world.use(world.unreachable)
        async with world.pipeline.stages(with_poller=True):
            intent = await world.app.create_intent(
                operation_type="IPPS_WITHDRAWAL", amount_minor=40_000, currency="THB", user_id=user,
                destination_ref="tok_late",
            )  # fmt: skip
            intent_id = intent["id"]
            await world.wait_for(lambda: _held(world, intent_id), "the payout was never held")
            assert await world.state(intent_id) == ("CLEARED", None)  # the connector could not submit
            # The PSP answers again, but PM's clock is past the submit deadline (and before the outcome's).
            world.move_clock(12)
            world.use(world.reachable)
            assert await world.wait_state(intent_id, ("AUTHORIZED",)) == "AUTHORIZED"
            await world.wait_for(lambda: _queried(world, intent_id, 2), "settlement never asked the PSP")
            assert await world.state(intent_id) == ("AUTHORIZED", None)  # unknown to the PSP: not final yet
            world.move_clock(21)  # past the outcome deadline
            assert await world.wait_state(intent_id, ("FAILED",)) == "FAILED"
        assert await world.state(intent_id) == ("FAILED", "EXPIRED")
        assert not world.submitted(Provider.IPPS, intent_id), "a payout was submitted past the submit deadline"
        assert not any(method == "POST" for method, _ in world.requests)
        assert await world.pipeline.balance(user) == (FUNDS_MINOR, 0)
        await world.assert_clean_ledger()


async def _held(world: World, intent_id: str) -> bool:
    found = await world.pipeline.context.ledger.lookup_transfers([accounts.transfer_id(uuid.UUID(intent_id), "hold")])
    return bool(found) and (await world.state(intent_id))[0] == "CLEARED"


async def _queried(world: World, intent_id: str, times: int) -> bool:
    return world.queries(intent_id) >= times


async def test_a_payout_submitted_in_time_settles_once_through_its_connector(fresh_database, redis_url) -> None:
    """The control: the same world with a reachable PSP submits once (the connector), settles on the
    signed callback, and debits the user exactly once."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10) as world:
        user = new_user()
        await world.fund(user)
        world.use(world.reachable)
        async with world.pipeline.stages(with_poller=True):
            intent = await world.app.create_intent(
                operation_type="IPPS_WITHDRAWAL", amount_minor=40_000, currency="THB", user_id=user,
                destination_ref="tok_fine",
            )  # fmt: skip
            assert await world.wait_state(intent["id"], ("SETTLED", "FAILED")) == "SETTLED"
            await world.pipeline.wait_finished([uuid.UUID(intent["id"])])
        assert sum(1 for method, path in world.requests if method == "POST" and path.endswith("/payouts")) == 1
        (hold,) = await world.pipeline.context.ledger.lookup_transfers(
            [accounts.transfer_id(uuid.UUID(intent["id"]), "hold")]
        )
        # The PSP may pay until PM gives up (hold + the 20 s outcome deadline), not until the hold's 30 s.
        pay_by_s = world.sim.payments[(Provider.IPPS, intent["id"])].request.hold_expires_at_s
        assert pay_by_s == int(hold.timestamp / 1e9 + 20), (pay_by_s, hold.timestamp / 1e9)
        assert await world.pipeline.balance(user) == (FUNDS_MINOR - 40_000, 0)
        await world.assert_clean_ledger()


async def test_a_psp_down_longer_than_the_hold_fails_the_payout_expired_and_never_submits_it(
    fresh_database, redis_url
) -> None:
    """The hold really expires in the ledger while the PSP is down (and the poller with it); the poller,
    back, re-drives the CLEARED intent through dispatch, which finds the hold `exists` but no longer held:
    FAILED EXPIRED, not AUTHORIZED, and nothing is sent to the PSP, which answers again by then."""
    async with psp_world(fresh_database, redis_url, hold_s=3, deadline_s=2, submit_s=1) as world:
        user = new_user()
        await world.fund(user)
        world.use(world.unreachable)
        async with world.pipeline.stages():
            intent = await world.app.create_intent(
                operation_type="IPPS_WITHDRAWAL", amount_minor=40_000, currency="THB", user_id=user,
                destination_ref="tok_down",
            )  # fmt: skip
            intent_id = intent["id"]
            await world.wait_for(lambda: _held(world, intent_id), "the payout was never held")
            await asyncio.sleep(3.2)  # the ledger's own timeout passes
            world.use(world.reachable)
            async with poller_running(world):
                assert await world.wait_state(intent_id, ("FAILED", "AUTHORIZED", "SETTLED")) == "FAILED"
                await world.pipeline.wait_finished([uuid.UUID(intent_id)])
        assert await world.state(intent_id) == ("FAILED", "EXPIRED")
        assert not world.submitted(Provider.IPPS, intent_id), "a payout was sent with nothing held"
        states = await world.pipeline.states(uuid.UUID(intent_id))
        assert "AUTHORIZED" not in states, states
        assert await world.pipeline.balance(user) == (FUNDS_MINOR, 0)
        await world.assert_clean_ledger()


async def test_a_qp_request_is_valid_only_until_pm_gives_up(fresh_database, redis_url) -> None:
    """QP is down for a while after the top-up is held; the payment request it finally gets expires when
    PM would give up on it (the hold's ledger timestamp + the outcome deadline, 20 s), not when the hold
    expires in the ledger (30 s: the user could pay in between, after PM voided), nor a full hold timeout
    after the connector ran."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10) as world:
        user = new_user()
        world.use(world.unreachable)
        async with world.pipeline.stages(with_poller=True):
            intent = await world.app.create_intent(
                operation_type="QP_TOPUP", amount_minor=30_000, currency="THB", user_id=user
            )
            intent_id = intent["id"]
            await world.wait_for(lambda: _held(world, intent_id), "the top-up was never held")
            await asyncio.sleep(2.5)
            world.use(world.reachable)
            assert await world.wait_state(intent_id, ("AUTHORIZED", "SETTLED")) in ("AUTHORIZED", "SETTLED")
            assert await world.wait_state(intent_id, ("SETTLED", "FAILED")) == "SETTLED"
            await world.pipeline.wait_finished([uuid.UUID(intent_id)])
        (hold,) = await world.pipeline.context.ledger.lookup_transfers(
            [accounts.transfer_id(uuid.UUID(intent_id), "hold")]
        )
        gives_up_at_s = hold.timestamp / 1e9 + 20
        assert gives_up_at_s < hold.timestamp / 1e9 + hold.timeout
        payment = world.sim.payments[(Provider.QP, intent_id)]
        request_expires_at_s = payment.created_at_s + payment.request.expires_in_s
        assert payment.created_at_s - hold.timestamp / 1e9 >= 2.5  # QP got it late
        assert gives_up_at_s - 1.5 <= request_expires_at_s <= gives_up_at_s, (request_expires_at_s, gives_up_at_s)
        assert await world.pipeline.balance(user) == (30_000, 0)
        await world.assert_clean_ledger()


async def test_a_qp_down_longer_than_the_hold_fails_the_top_up_and_credits_nothing(fresh_database, redis_url) -> None:
    """The same for a top-up: the QR request is never created for a hold that has expired."""
    async with psp_world(fresh_database, redis_url, hold_s=3, deadline_s=2, submit_s=1) as world:
        user = new_user()
        world.use(world.unreachable)
        async with world.pipeline.stages():
            intent = await world.app.create_intent(
                operation_type="QP_TOPUP", amount_minor=30_000, currency="THB", user_id=user
            )
            intent_id = intent["id"]
            await world.wait_for(lambda: _held(world, intent_id), "the top-up was never held")
            await asyncio.sleep(3.2)
            world.use(world.reachable)
            async with poller_running(world):
                assert await world.wait_state(intent_id, ("FAILED", "AUTHORIZED", "SETTLED")) == "FAILED"
                await world.pipeline.wait_finished([uuid.UUID(intent_id)])
        assert await world.state(intent_id) == ("FAILED", "EXPIRED")
        assert not world.submitted(Provider.QP, intent_id), "a QR request was created with nothing held"
        assert "AUTHORIZED" not in await world.pipeline.states(uuid.UUID(intent_id))
        assert await world.pipeline.balance(user) == (0, 0)
        (psp,) = await world.pipeline.context.ledger.lookup_accounts([accounts.psp("QP_TRANSFER", "THB").id])
        assert (psp.debits_posted, psp.debits_pending) == (0, 0)
        await world.assert_clean_ledger()


async def test_a_redriven_dispatch_does_not_count_an_expired_p2p_hold_as_held(fresh_database, redis_url) -> None:
    """Dispatch held a P2P payment but its compare-and-set was lost; when the entry comes back after the
    hold's timeout, `exists` is not "held": the intent fails EXPIRED instead of becoming AUTHORIZED."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10) as world:
        alice, bob = new_user(), new_user()
        await world.fund(alice)
        cleared = await _cleared(
            world.pipeline, OperationType.P2P_TRANSFER, "INTERNAL_P2P", 25_000, sender_id=alice, recipient_id=bob
        )
        first = await dispatch.handle([cleared], world.pipeline.context)
        assert [t.new for t in first] == [State.AUTHORIZED]  # ... and this transition is lost
        world.move_clock(channels.REGISTRY["INTERNAL_P2P"].hold_timeout_s + 1)
        again = await dispatch.handle([cleared], world.pipeline.context)
        assert [(t.new, str(t.error_code)) for t in again] == [(State.FAILED, "EXPIRED")]
        ((result),) = await store.apply_transitions(world.pipeline.context.pool, again)
        assert result.applied
        assert await world.pipeline.balance(alice) == (FUNDS_MINOR, 0)
        assert await world.pipeline.balance(bob) == (0, 0)
        await world.assert_clean_ledger()


async def _cleared(
    pipeline: Pipeline, operation_type: OperationType, channel_name: str, amount_minor: int, **parties: Any
):
    """An intent the checks passed (CLEARED), as dispatch receives it."""
    outcome = await store.create_intent(
        pipeline.context.pool, api_key_id="psp-safety", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
        operation_type=operation_type, amount_minor=amount_minor, currency="THB", operator_id=None, **parties,
    )  # fmt: skip
    intent = outcome.created
    path = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED]
    for expected, new in itertools.pairwise(path):
        transition = Transition(intent.id, expected, new, channel=channel_name if new == State.VALIDATED else None)
        ((result),) = await store.apply_transitions(pipeline.context.pool, [transition])
        intent = result.intent
    channel = channels.channel_of(intent)
    await pipeline.context.ledger.create_accounts([a.to_tigerbeetle() for a in channel.accounts(intent)])
    return intent


async def test_a_forged_paid_callback_signed_with_the_simulators_secret_moves_no_money(
    fresh_database, redis_url, make_gateway_on
) -> None:
    """The callback secrets used to default to the simulator's public strings, so anyone could sign a PAID
    callback for a held top-up and be credited. A gateway given no secrets refuses it (401), hands
    nothing to settlement, and the top-up stays held, then fails at its deadline with nothing credited."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10) as world:
        user = new_user()
        world.use(world.reachable)
        async with (
            make_gateway_on(world, psp_ipps_callback_secret=None, psp_qp_callback_secret=None) as bare,
            world.pipeline.stages(with_poller=True),
        ):
            intent = await world.app.create_intent(
                operation_type="QP_TOPUP",
                amount_minor=30_013,
                currency="THB",
                user_id=user,  # 13: never paid
            )
            intent_id = intent["id"]
            assert await world.wait_state(intent_id, ("AUTHORIZED",)) == "AUTHORIZED"
            forged = orjson.dumps({
                "event_id": uuid.uuid4().hex, "provider": "qp", "reference": intent_id, "status": "PAID",
                "amount_minor": 30_013, "currency": "THB", "occurred_at": "2026-12-03T10:00:00Z",
            })  # fmt: skip
            signature = psp_signing.sign(SIMULATOR_QP_CALLBACK_SECRET, forged, int(time.time()))
            async with bare.post(
                "/psp/QP_TRANSFER/callback", data=forged,
                headers={psp_signing.SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
            ) as answer:  # fmt: skip
                assert answer.status == 401
            await asyncio.sleep(1.0)  # time enough for settlement to act on a hand-over, had there been one
            assert await world.state(intent_id) == ("AUTHORIZED", None)
            events = await world.pipeline.context.pool.fetchval(
                "SELECT count(*) FROM pm.psp_event WHERE intent_id = $1::uuid", intent_id
            )
            assert events == 0
            world.move_clock(21)  # QP never reports it paid: PM gives up at its deadline
            assert await world.wait_state(intent_id, ("FAILED", "SETTLED")) == "FAILED"
            await world.pipeline.wait_finished([uuid.UUID(intent_id)])
        assert await world.pipeline.balance(user) == (0, 0)
        await world.assert_clean_ledger()


@pytest.fixture
def make_gateway_on() -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """A second gateway on a world's database and streams, with settings of a test's own, as a client."""

    @contextlib.asynccontextmanager
    async def make(world: World, **settings: Any) -> AsyncIterator[Any]:
        configured = Settings(**settings)
        app = create_app(
            configured, database_url=world.pipeline.database_url, redis_url=world.pipeline.redis_url,
            ledger_url=world.pipeline.database_url, topology=world.pipeline.topology,
        )  # fmt: skip
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(**runner_options(configured))
        try:
            async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as session:
                yield session
        finally:
            await server.close()

    return make


async def test_settlement_asks_a_psp_about_an_intent_at_most_once_per_interval(fresh_database, redis_url) -> None:
    """Twenty entries naming one AUTHORIZED payout (duplicates, re-drives) within the interval make one
    status query; after the interval, the next entry may ask again."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10, query_interval_s=1.0) as w:
        user = new_user()
        await w.fund(user)
        w.use(w.reachable)
        cleared = await _cleared(
            w.pipeline, OperationType.IPPS_WITHDRAWAL, "IPPS_TRANSFER", 40_021,  # 21: no callback, status only
            sender_id=user, recipient_id=None, destination_ref="tok_quiet",
        )  # fmt: skip
        assert await dispatch.handle([cleared], w.pipeline.context) == []  # held; a job for the connector
        (authorized,) = await psp_connector.handle([cleared], w.pipeline.context)
        ((result),) = await store.apply_transitions(w.pipeline.context.pool, [authorized])
        intent = result.intent
        intent_id = str(intent.id)
        before = w.queries(intent_id)
        for _ in range(4):
            assert await asyncio.gather(*(settlement.handle([intent], w.pipeline.context) for _ in range(5))) == [
                [] for _ in range(5)
            ]
        assert w.queries(intent_id) - before == 1
        await asyncio.sleep(1.1)
        decided = await settlement.handle([intent], w.pipeline.context)  # the simulator has paid it by now
        assert w.queries(intent_id) - before == 2
        assert [t.new for t in decided] == [State.SETTLED]
        await store.apply_transitions(w.pipeline.context.pool, decided)
        assert await w.pipeline.balance(user) == (FUNDS_MINOR - 40_021, 0)
        await w.assert_clean_ledger()


@contextlib.asynccontextmanager
async def lying_psp(reported: dict[str, Any], *, reference_reused: bool = False) -> AsyncIterator[PspClient]:
    """An IPPS that takes every payout (or refuses each, 409, with `reference_reused`) and answers every
    status query SUCCEEDED with `reported` (its amount_minor and currency): a PSP's bug, or another
    payment under our reference."""

    async def create(request: web.Request) -> web.Response:
        if reference_reused:
            return web.json_response({"error": "reference_reused"}, status=409)
        body = await request.json()
        return web.json_response({"reference": body["reference"], "status": "PROCESSING", "created": True}, status=201)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"reference": request.match_info["reference"], "status": "SUCCEEDED", **reported})

    app = web.Application()
    app.router.add_post("/ipps/v1/payouts", create)
    app.router.add_get("/ipps/v1/payouts/{reference}", status)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        psp = PspClient(Settings(**SIMULATOR_SETTINGS, psp_ipps_url=f"{base}/ipps", psp_request_timeout_s=1.0))
        try:
            yield psp
        finally:
            await psp.close()


@pytest.mark.parametrize(
    "reported", [{"amount_minor": 1, "currency": "THB"}, {"amount_minor": 40_000, "currency": "USD"}, {}], ids=str
)
async def test_a_status_answer_for_another_payment_settles_nothing(fresh_database, redis_url, reported) -> None:
    """Settlement asks the PSP and hears SUCCEEDED, but for another amount or currency than PM submitted:
    it decides nothing on that word (no post), flags the intent, and at the outcome deadline voids the
    hold as for no answer. The user keeps every satang; an operator looks."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=4, submit_s=2) as world:
        user = new_user()
        await world.fund(user)
        async with lying_psp(reported) as liar:
            world.use(liar)
            async with world.pipeline.stages(with_poller=True):
                intent = await world.app.create_intent(
                    operation_type="IPPS_WITHDRAWAL", amount_minor=40_000, currency="THB", user_id=user,
                    destination_ref="tok_crossed",
                )  # fmt: skip
                intent_id = intent["id"]
                assert await world.wait_state(intent_id, ("SETTLED", "FAILED")) == "FAILED"
                await world.pipeline.wait_finished([uuid.UUID(intent_id)])
        assert await world.state(intent_id) == ("FAILED", "EXPIRED")
        row = await world.pipeline.context.pool.fetchrow(
            "SELECT needs_review, review_reason FROM pm.intent WHERE id = $1::uuid", intent_id
        )
        assert row["needs_review"] and "another payment" in row["review_reason"], row
        assert await world.pipeline.balance(user) == (FUNDS_MINOR, 0)
        await world.assert_clean_ledger()


@pytest.mark.parametrize(
    "reported",
    [{"amount_minor": 40_000, "currency": "THB"}, {"amount_minor": 39_999, "currency": "THB"}],
    ids=["same amount, another destination", "another amount"],
)
async def test_a_submit_refused_for_a_reused_reference_fails_and_is_flagged_at_once(
    fresh_database, redis_url, reported
) -> None:
    """IPPS answers the submit 409: another payment has our reference. Ours never reached the PSP, and its
    status answers name that other payment, which may well have our amount and currency (only the
    destination differs) and pass every check of a report: PM voids at once, FAILED `PSP_DECLINED`, and
    flags the intent, long before the deadline. Nothing settles on the other payment's SUCCEEDED."""
    async with psp_world(fresh_database, redis_url, hold_s=60, deadline_s=30, submit_s=20) as world:
        user = new_user()
        await world.fund(user)
        async with lying_psp(reported, reference_reused=True) as liar:
            world.use(liar)
            async with world.pipeline.stages(with_poller=True):
                intent = await world.app.create_intent(
                    operation_type="IPPS_WITHDRAWAL", amount_minor=40_000, currency="THB", user_id=user,
                    destination_ref="tok_reused",
                )  # fmt: skip
                intent_id = intent["id"]
                assert await world.wait_state(intent_id, ("SETTLED", "FAILED"), timeout_s=10) == "FAILED"
                await world.pipeline.wait_finished([uuid.UUID(intent_id)])
        assert await world.state(intent_id) == ("FAILED", "PSP_DECLINED")
        reason = await world.pipeline.context.pool.fetchval(
            "SELECT review_reason FROM pm.intent WHERE id = $1::uuid", intent_id
        )
        assert reason.startswith("the PSP refused the submit: another payment has our reference"), reason
        assert await world.pipeline.balance(user) == (FUNDS_MINOR, 0)
        await world.assert_clean_ledger()


@pytest.mark.parametrize("order", ["re-drive first", "callback first"])
async def test_a_callback_beside_a_redrive_in_one_batch_decides_it(fresh_database, redis_url, order: str) -> None:
    """A re-drive entry (no PSP status) and a signed callback's entry (SUCCEEDED) for one payout land in
    one settlement batch, the PSP's status slot taken by a query a moment ago: the batch is handled as
    the callback's entry, whichever came first, so the outcome is not dropped with the acknowledged
    entries (it would wait for the next re-drive, or for the deadline's void if the PSP's status
    endpoint were down). Settled once, the user debited once."""
    async with psp_world(fresh_database, redis_url, hold_s=30, deadline_s=20, submit_s=10, query_interval_s=30) as w:
        user = new_user()
        await w.fund(user)
        w.use(w.reachable)
        cleared = await _cleared(
            w.pipeline, OperationType.IPPS_WITHDRAWAL, "IPPS_TRANSFER", 40_021,  # 21: no callback from the sim
            sender_id=user, recipient_id=None, destination_ref="tok_quiet",
        )  # fmt: skip
        await dispatch.handle([cleared], w.pipeline.context)
        (authorized,) = await psp_connector.handle([cleared], w.pipeline.context)
        ((result),) = await store.apply_transitions(w.pipeline.context.pool, [authorized])
        intent = result.intent
        assert await settlement.handle([intent], w.pipeline.context) == []  # asked: PROCESSING; the slot is taken
        redrive = {k.encode(): v for k, v in streams.entry_fields(intent).items()}
        signed = dataclasses.replace(intent, psp_status="SUCCEEDED")
        callback = {k.encode(): v for k, v in streams.entry_fields(signed, signed.to_message()).items()}
        entries = [(b"1-1", redrive), (b"1-2", callback)]
        runner = StageRunner(w.pipeline.topology.stage_for_state(State.AUTHORIZED), w.pipeline.context)
        await runner.process(entries if order == "re-drive first" else entries[::-1])
        assert await w.state(str(intent.id)) == ("SETTLED", None)
        assert await w.pipeline.balance(user) == (FUNDS_MINOR - 40_021, 0)
        await w.assert_clean_ledger()
