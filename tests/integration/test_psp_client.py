"""PM's PSP client against the simulator over real HTTP: unknown references are None, a submit is
idempotent by reference, a reference reused for another payment and a PSP that answers 5xx or refuses
our key are `PspUnavailable` (never a status PM would act on); calls in flight are bounded; every call is
counted by provider, operation and outcome."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from pm.config.settings import Settings
from pm.dev.psp_sim import create_sim_app
from pm.domain.psp import Provider
from pm.psp.client import PSP_CALLS_IN_FLIGHT_MAX, PspClient, PspUnavailable
from pm.psp.secrets import SIMULATOR_SETTINGS

IPPS, QP = Provider.IPPS, Provider.QP
CALLBACK_URL = "http://127.0.0.1:9/psp/IPPS_TRANSFER/callback"  # nobody listens: the simulator's callbacks fail
PAYOUT = {"callback_url": CALLBACK_URL, "currency": "THB", "destination_ref": "tok", "hold_expires_at_s": 2**31}
REQUEST = {"callback_url": CALLBACK_URL, "amount_minor": 7_000, "currency": "THB", "expires_in_s": 60}


@pytest.fixture
async def base_url():
    async with TestServer(create_sim_app(Settings(psp_sim_delay_ms=0)), host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


def client(base_url: str, **settings) -> PspClient:
    return PspClient(
        Settings(**{**SIMULATOR_SETTINGS, **settings}, psp_ipps_url=f"{base_url}/ipps", psp_qp_url=f"{base_url}/qp")
    )


async def test_submit_is_idempotent_and_status_reads_it(base_url) -> None:
    psp = client(base_url)
    try:
        reference = str(uuid.uuid4())
        assert await psp.payout_status(IPPS, reference) is None
        payout = {**PAYOUT, "amount_minor": 5_000}
        assert await psp.submit_payout(IPPS, reference, **payout) == "PROCESSING"
        assert await psp.submit_payout(IPPS, reference, **payout) in ("PROCESSING", "SUCCEEDED")  # the same payout
        report = await psp.payout_status(IPPS, reference)
        assert report is not None and report.status in ("PROCESSING", "SUCCEEDED")
        assert (report.amount_minor, report.currency) == (5_000, "THB")  # what it has under our reference
        with pytest.raises(PspUnavailable, match="reference_reused"):
            await psp.submit_payout(IPPS, reference, **{**payout, "amount_minor": 5_001})
        top_up = str(uuid.uuid4())
        assert await psp.payment_request_status(QP, top_up) is None
        assert await psp.submit_payment_request(QP, top_up, **REQUEST) == "PENDING"
    finally:
        await psp.close()


async def test_a_psp_that_fails_or_refuses_our_key_is_unavailable(base_url) -> None:
    wrong_key = client(base_url, psp_api_key="not-the-sandbox-key")
    try:
        with pytest.raises(PspUnavailable):
            await wrong_key.payout_status(IPPS, str(uuid.uuid4()))
    finally:
        await wrong_key.close()
    psp = client(base_url)
    try:
        reference = str(uuid.uuid4())
        # Behaviour 26: the first two status queries answer 503.
        payout = {**PAYOUT, "amount_minor": 5_026}
        await psp.submit_payout(IPPS, reference, **payout)
        for _ in range(2):
            with pytest.raises(PspUnavailable, match="503"):
                await psp.payout_status(IPPS, reference)
        assert (await psp.payout_status(IPPS, reference)).status in ("PROCESSING", "SUCCEEDED")
    finally:
        await psp.close()
    nowhere = PspClient(Settings(**SIMULATOR_SETTINGS, psp_ipps_url="http://127.0.0.1:1/ipps"))
    try:
        with pytest.raises(PspUnavailable):
            await nowhere.payout_status(IPPS, str(uuid.uuid4()))
    finally:
        await nowhere.close()


async def test_at_most_so_many_calls_are_in_flight_and_none_times_out_waiting_its_turn() -> None:
    """A batch's worth of status queries to a slow PSP: never more than PSP_CALLS_IN_FLIGHT_MAX at once,
    and the timeout (1.5 s here, against 0.3 s per answer: a margin a loaded machine keeps) counts only once a
    call runs: eight waves take 2.4 s in all, longer than the timeout."""
    in_flight = peak = 0

    async def slow_status(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return web.json_response({"reference": request.match_info["reference"], "status": "PROCESSING"})

    app = web.Application()
    app.router.add_get("/ipps/v1/payouts/{reference}", slow_status)
    async with TestServer(app, host="127.0.0.1") as server:
        psp = client(str(server.make_url("")).rstrip("/"), psp_request_timeout_s=1.5)
        try:
            calls = 8 * PSP_CALLS_IN_FLIGHT_MAX
            answers = await asyncio.gather(*(psp.payout_status(IPPS, str(uuid.uuid4())) for _ in range(calls)))
        finally:
            await psp.close()
    assert [answer.status for answer in answers] == ["PROCESSING"] * calls
    assert peak == PSP_CALLS_IN_FLIGHT_MAX


def calls(provider: str, operation: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "pm_psp_calls_total", {"provider": provider, "operation": operation, "outcome": outcome}
        )
        or 0.0
    )


async def test_every_call_is_counted_by_provider_operation_and_outcome(base_url) -> None:
    """pm_psp_calls_total (the dashboard's and PmPspErrors' source): answers, unknown references, 5xx,
    a reused reference, a refused key, an unreachable PSP and a timeout each count under their outcome."""
    before = {
        key: calls(*key)
        for key in [
            ("ipps", "status", "not_found"), ("ipps", "submit", "ok"), ("ipps", "status", "http_5xx"),
            ("ipps", "submit", "reference_reused"), ("qp", "status", "refused"), ("ipps", "status", "connection"),
            ("ipps", "status", "timeout"), ("ipps", "status", "ok"),
        ]
    }  # fmt: skip
    seconds_before = REGISTRY.get_sample_value("pm_psp_call_seconds_count", {"provider": "ipps", "operation": "submit"})
    psp = client(base_url)
    wrong_key = client(base_url, psp_api_key="not-the-sandbox-key")
    nowhere = PspClient(Settings(**SIMULATOR_SETTINGS, psp_ipps_url="http://127.0.0.1:1/ipps"))
    try:
        reference = str(uuid.uuid4())
        assert await psp.payout_status(IPPS, reference) is None
        payout = {**PAYOUT, "amount_minor": 6_026}  # behaviour 26: two 503s to status queries first
        await psp.submit_payout(IPPS, reference, **payout)
        for _ in range(2):
            with pytest.raises(PspUnavailable):
                await psp.payout_status(IPPS, reference)
        await psp.payout_status(IPPS, reference)
        with pytest.raises(PspUnavailable):
            await psp.submit_payout(IPPS, reference, **{**payout, "amount_minor": 6_126})
        with pytest.raises(PspUnavailable):
            await wrong_key.payment_request_status(QP, str(uuid.uuid4()))
        with pytest.raises(PspUnavailable):
            await nowhere.payout_status(IPPS, str(uuid.uuid4()))
    finally:
        for each in (psp, wrong_key, nowhere):
            await each.close()

    async def never_answers(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/ipps/v1/payouts/{reference}", never_answers)
    async with TestServer(app, host="127.0.0.1") as server:
        slow = client(str(server.make_url("")).rstrip("/"), psp_request_timeout_s=0.2)
        try:
            with pytest.raises(PspUnavailable):
                await slow.payout_status(IPPS, str(uuid.uuid4()))
        finally:
            await slow.close()
    counted = {key: calls(*key) - value for key, value in before.items()}
    assert counted == {
        ("ipps", "status", "not_found"): 1, ("ipps", "submit", "ok"): 1, ("ipps", "status", "http_5xx"): 2,
        ("ipps", "submit", "reference_reused"): 1, ("qp", "status", "refused"): 1,
        ("ipps", "status", "connection"): 1, ("ipps", "status", "timeout"): 1, ("ipps", "status", "ok"): 1,
    }  # fmt: skip
    seconds_after = REGISTRY.get_sample_value("pm_psp_call_seconds_count", {"provider": "ipps", "operation": "submit"})
    assert seconds_after == (seconds_before or 0) + 2
