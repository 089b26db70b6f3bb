"""The PSP simulator (issue 5): an aiohttp app that plays two providers, IPPS (payouts) and QP (payment
requests for top-ups), the way their sandboxes do. `pm run psp-sim` serves it; the README's "PSP
simulator" section is the API contract.

    app = create_sim_app(settings)                 # or create_sim_app(settings, clock=SteppableClock())
    await run_psp_sim(settings)                    # serves on PM_PSP_SIM_HOST:PM_PSP_SIM_PORT until cancelled

Every PM -> PSP request carries `Authorization: Bearer <psp_api_key>`. What happens to a payment is
picked by its amount's last two digits (pm/dev/psp_sim_behaviour.py); callbacks are signed with
pm/domain/psp_signing.py, retried with backoff by a task of their own (never in the creating request), and every
attempt is listed at `GET /sim/v1/events`. State lives in memory, bounded: a simulator, not a ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from pm.config.settings import Settings
from pm.dev.psp_sim_behaviour import Plan, PlannedCallback, Provider, plan_for
from pm.dev.psp_sim_requests import InvalidRequest, SimRequest, is_reference, parse_payment_request, parse_payout
from pm.domain import psp_signing
from pm.psp.secrets import simulator_secrets

log = logging.getLogger("pm.dev.psp_sim")

PAYMENTS_MAX = 100_000  # both providers together; a full simulator answers 503 to new requests
EVENTS_MAX = 10_000  # callback attempts kept for GET /sim/v1/events
BODY_BYTES_MAX = 64 * 1024
CALLBACK_ATTEMPTS_MAX = 6
CALLBACK_BACKOFF_FIRST_S = 0.5  # doubles after every failed attempt: 0.5, 1, 2, 4, 8
CALLBACK_TIMEOUT_S = 5.0
CALLBACK_CONNECT_TIMEOUT_S = 2.0
CALLBACK_CONNECTIONS_MAX = 100
SHUTDOWN_TIMEOUT_S = 5.0
WRONG_SECRET_PREFIX = "wrong-"  # 25: the callback is signed with a secret PM does not have


class Clock(Protocol):
    def now_s(self) -> float: ...

    async def sleep_until(self, deadline_s: float) -> None: ...


class SystemClock:
    def now_s(self) -> float:
        return time.time()

    async def sleep_until(self, deadline_s: float) -> None:
        remaining_s = deadline_s - time.time()
        if remaining_s > 0:
            await asyncio.sleep(remaining_s)


class SteppableClock:
    """The system's time plus an offset a test moves forward (`advance`): sleepers past the new time wake."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self._moved = asyncio.Event()

    def now_s(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time only moves forward"
        self.offset_s += seconds
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def sleep_until(self, deadline_s: float) -> None:
        # Each turn ends at the deadline or when the clock moved: the loop ends once the deadline passed.
        while (remaining_s := deadline_s - self.now_s()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), remaining_s)


@dataclass
class Payment:
    request: SimRequest
    created_at_s: float
    plan: Plan
    status_queries_failed: int = 0


def rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def qr_payload(request: SimRequest) -> str:
    """A stand-in for the EMVCo QR string a user's banking app scans (the reference makes it unique)."""
    amount = f"{request.amount_minor // 100}.{request.amount_minor % 100:02d}"
    return f"SIMQR|{request.provider}|{request.reference}|{amount}|{request.currency}"


@dataclass
class Simulator:
    settings: Settings
    clock: Clock
    payments_max: int = PAYMENTS_MAX
    payments: dict[tuple[Provider, str], Payment] = field(default_factory=dict)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_MAX))
    session: aiohttp.ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- the API's two operations ------------------------------------------------------------------

    def create(self, request: SimRequest) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of a create request: 201 new, 200 a repeat, 409 a reused reference, 503 full."""
        existing = self.payments.get((request.provider, request.reference))
        if existing is not None:
            if not existing.request.same_payment(request):
                return 409, {"error": "reference_reused"}
            status = existing.plan.status_at(self.clock.now_s())
            return 200, self._created_body(existing.request, status, created=False)
        if len(self.payments) >= self.payments_max:
            return 503, {"error": "full"}
        now_s = self.clock.now_s()
        plan = plan_for(
            request.provider,
            request.amount_minor,
            now_s,
            self.settings.psp_sim_delay_ms / 1000,
            hold_expires_at_s=request.hold_expires_at_s,
            expires_in_s=request.expires_in_s,
        )
        payment = Payment(request=request, created_at_s=now_s, plan=plan)
        self.payments[(request.provider, request.reference)] = payment
        if plan.callbacks:
            task = asyncio.create_task(self._send_callbacks(payment), name=f"psp-sim {request.reference}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return 201, self._created_body(request, plan.initial_status, created=True)

    def query(self, provider: Provider, reference: str) -> tuple[int, dict[str, Any]]:
        payment = self.payments.get((provider, reference))
        if payment is None:
            return 404, {"error": "not_found"}
        if payment.status_queries_failed < payment.plan.status_failures:
            payment.status_queries_failed += 1
            return 503, {"error": "unavailable"}
        request = payment.request
        return 200, {
            "reference": request.reference,
            "status": payment.plan.status_at(self.clock.now_s()),
            "amount_minor": request.amount_minor,
            "currency": request.currency,
        }

    @staticmethod
    def _created_body(request: SimRequest, status: str, *, created: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"reference": request.reference, "status": status, "created": created}
        if request.provider is Provider.QP:
            body["qr_payload"] = qr_payload(request)
        return body

    # -- callbacks ---------------------------------------------------------------------------------

    def _secret(self, provider: Provider) -> str:
        _, ipps_secret, qp_secret = simulator_secrets(self.settings)
        return ipps_secret if provider is Provider.IPPS else qp_secret

    async def _send_callbacks(self, payment: Payment) -> None:
        """The payment's events in order, each delivered (with its retries) before the next one."""
        try:
            for callback in payment.plan.callbacks:
                await self.clock.sleep_until(callback.send_at_s)
                event_id = uuid.uuid4().hex
                request = payment.request
                body = orjson.dumps(
                    {
                        "event_id": event_id,
                        "provider": str(request.provider),
                        "reference": request.reference,
                        "status": callback.status,
                        "amount_minor": request.amount_minor,
                        "currency": request.currency,
                        "occurred_at": rfc3339(callback.occurred_at_s),
                    }
                )
                for delivery in range(1, callback.deliveries + 1):
                    await self._deliver(payment, callback, event_id, body, delivery)
        except Exception:  # a bug here must show in the log, not end the task silently
            log.exception("psp-sim callbacks failed", extra={"reference": payment.request.reference})

    async def _deliver(
        self, payment: Payment, callback: PlannedCallback, event_id: str, body: bytes, delivery: int
    ) -> bool:
        """POST one event until a 2xx answer, at most CALLBACK_ATTEMPTS_MAX times; True when answered 2xx."""
        assert self.session is not None, "the simulator's HTTP session opens with the app"
        request = payment.request
        secret = self._secret(request.provider)
        if callback.wrong_secret:
            secret = WRONG_SECRET_PREFIX + secret
        backoff_s = CALLBACK_BACKOFF_FIRST_S
        for attempt in range(1, CALLBACK_ATTEMPTS_MAX + 1):
            signature = psp_signing.sign(secret, body, int(self.clock.now_s()))
            headers = {"Content-Type": "application/json", psp_signing.SIGNATURE_HEADER: signature}
            answered_status: int | None = None
            error: str | None = None
            try:
                async with self.session.post(
                    request.callback_url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    answered_status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
            self._record(request, callback, event_id, delivery, attempt, answered_status, error)
            if answered_status is not None and 200 <= answered_status < 300:
                return True
            if attempt < CALLBACK_ATTEMPTS_MAX:
                await self.clock.sleep_until(self.clock.now_s() + backoff_s)
                backoff_s *= 2
        log.warning("psp-sim callback abandoned", extra={"reference": request.reference, "event_id": event_id})
        return False

    def _record(
        self,
        request: SimRequest,
        callback: PlannedCallback,
        event_id: str,
        delivery: int,
        attempt: int,
        answered_status: int | None,
        error: str | None,
    ) -> None:
        entry = {
            "event_id": event_id,
            "provider": str(request.provider),
            "reference": request.reference,
            "status": callback.status,
            "delivery": delivery,
            "attempt": attempt,
            "answered_status": answered_status,
            "error": error,
            "wrong_secret": callback.wrong_secret,
            "at": rfc3339(self.clock.now_s()),
        }
        self.events.append(entry)
        log.info("psp-sim callback", extra=entry)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=SHUTDOWN_TIMEOUT_S)


# -- HTTP ------------------------------------------------------------------------------------------

SIMULATOR = web.AppKey("psp_simulator", Simulator)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTHENTICATED_PREFIXES = ("/ipps/", "/qp/")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(AUTHENTICATED_PREFIXES):
        api_key, _, _ = simulator_secrets(request.app[SIMULATOR].settings)
        expected = f"Bearer {api_key}".encode()
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(expected, given):
            return _json({"error": "unauthorized"}, 401)
    return await handler(request)


async def _create(request: web.Request, parse: Callable[[Any], SimRequest]) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"error": "invalid_json", "message": "the body is not JSON"}, 400)
    try:
        sim_request = parse(body)
    except InvalidRequest as exc:
        return _json({"error": exc.code, "message": exc.message}, 400)
    status, answer = request.app[SIMULATOR].create(sim_request)
    return _json(answer, status)


def _query(request: web.Request, provider: Provider) -> web.Response:
    reference = request.match_info["reference"]
    if not is_reference(reference):
        return _json({"error": "not_found"}, 404)
    status, answer = request.app[SIMULATOR].query(provider, reference)
    return _json(answer, status)


async def create_payout(request: web.Request) -> web.Response:
    return await _create(request, parse_payout)


async def get_payout(request: web.Request) -> web.Response:
    return _query(request, Provider.IPPS)


async def create_payment_request(request: web.Request) -> web.Response:
    return await _create(request, parse_payment_request)


async def get_payment_request(request: web.Request) -> web.Response:
    return _query(request, Provider.QP)


async def list_events(request: web.Request) -> web.Response:
    reference = request.query.get("reference")
    events = request.app[SIMULATOR].events
    items = [event for event in events if reference is None or event["reference"] == reference]
    return _json({"items": items})


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def _http_session(simulator: Simulator) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=CALLBACK_TIMEOUT_S, connect=CALLBACK_CONNECT_TIMEOUT_S, sock_read=CALLBACK_TIMEOUT_S
        )
        connector = aiohttp.TCPConnector(limit=CALLBACK_CONNECTIONS_MAX)
        simulator.session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        try:
            yield
        finally:
            await simulator.close()  # the callback tasks first: they use the session
            await simulator.session.close()

    return context


def create_sim_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    simulator = Simulator(settings=settings, clock=clock or SystemClock())
    app = web.Application(client_max_size=BODY_BYTES_MAX, middlewares=[_authenticate])
    app[SIMULATOR] = simulator
    app.cleanup_ctx.append(_http_session(simulator))
    app.router.add_post("/ipps/v1/payouts", create_payout)
    app.router.add_get("/ipps/v1/payouts/{reference}", get_payout)
    app.router.add_post("/qp/v1/payment-requests", create_payment_request)
    app.router.add_get("/qp/v1/payment-requests/{reference}", get_payment_request)
    app.router.add_get("/sim/v1/events", list_events)
    app.router.add_get("/sim/v1/health", health)
    return app


async def run_psp_sim(
    settings: Settings, *, clock: Clock | None = None, started: Callable[[str], None] | None = None
) -> None:
    """Serve on PM_PSP_SIM_HOST:PM_PSP_SIM_PORT until cancelled; `started` gets the URL once it listens."""
    app = create_sim_app(settings, clock=clock)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.psp_sim_host, settings.psp_sim_port, reuse_address=True)
        await site.start()
        url = f"http://{settings.psp_sim_host}:{settings.psp_sim_port}"
        log.info("psp-sim listening", extra={"url": url, "delay_ms": settings.psp_sim_delay_ms})
        if started is not None:
            started(url)
        await asyncio.Event().wait()  # Serves until cancelled: meant to run forever.
    finally:
        await runner.cleanup()
