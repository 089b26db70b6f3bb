"""What operators and other machines rely on: /healthz, /readyz (503 naming the dependency that failed),
/metrics (requests by route and status), an OpenAPI 3.1 document that describes exactly the app's
routes, backpressure (503 OVERLOADED with Retry-After while the first stage is behind), the header size
limits, and `run_gateway` serving on the configured port with the access log off unless asked for."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from gateway.app import ROUTES, create_app, run_gateway, runner_options
from pm.config.constants import BACKLOG_MEASURE_INTERVAL_S
from pm.config.settings import Settings
from tests.support.gateway import Gateway, MakeGateway, error_of, isolated_topology, new_user, p2p_body
from tests.support.ports import free_port


async def test_healthz_and_readyz_when_everything_answers(gateway: Gateway) -> None:
    assert await (await gateway.raw("GET", "/healthz")).json() == {"status": "ok"}
    ready = await gateway.raw("GET", "/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "ledger": "ok"}}


async def test_readyz_names_the_dependency_that_does_not_answer(postgres_url: str) -> None:
    # Port 1 on loopback: nothing listens, so Redis is refused at once.
    app = create_app(
        Settings(),
        database_url=postgres_url,
        redis_url="redis://127.0.0.1:1/0",
        ledger_url=postgres_url,
        topology=isolated_topology(),
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        body = await response.json()
        assert body["checks"]["database"] == "ok" and body["checks"]["ledger"] == "ok"
        assert body["down"] == ["redis"]
        assert body["checks"]["redis"].startswith("error")
        assert body["error"]["code"] == "UNAVAILABLE" and "redis" in body["error"]["message"]
        assert (await client.get("/healthz")).status == 200


async def test_metrics_count_requests_by_route_and_status(gateway: Gateway) -> None:
    key = await gateway.key()
    assert (await gateway.post_intent(key, p2p_body(new_user()), user_id=new_user())).status == 202
    assert (await gateway.send("GET", f"/intents/{'0' * 8}", key=key, user_id=new_user())).status == 404
    response = await gateway.raw("GET", "/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'pm_http_requests_total{method="POST",route="/intents",status="202"}' in text
    assert 'pm_http_requests_total{method="GET",route="/intents/{id}",status="404"}' in text
    assert 'pm_http_request_seconds_bucket{le="0.005",route="/intents"}' in text
    assert "pm_gateway_intents_created_total" in text


async def test_openapi_describes_exactly_the_routes_of_the_app(gateway: Gateway) -> None:
    document = await (await gateway.raw("GET", "/openapi.json")).json()
    validate(document)  # a valid OpenAPI 3.1 document
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    registered = {(route.method, route.resource.canonical) for route in gateway.client.app.router.routes()}
    assert described == registered
    scopes = {(route.method, route.path): route.scope for route in ROUTES}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            scope = scopes[(method.upper(), path)]
            assert operation.get("x-pm-scope") == scope, (method, path)
            assert bool(operation["security"]) == (scope is not None), (method, path)
            if scope is not None:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
    schema = document["components"]["schemas"]["IntentRequest"]
    assert schema["additionalProperties"] is False and "amount_minor" in schema["required"]


async def test_backpressure_refuses_new_intents_while_the_first_stage_is_behind(make_gateway: MakeGateway) -> None:
    async with make_gateway(backpressure_backlog_entries_max=3) as busy:
        stage = busy.topology.first_stage
        key = await busy.key()
        for index in range(4):
            await busy.redis.xadd(stage.stream, {"intent": f"backlog {index}"})
        # No group yet: all four entries wait.
        refused = await busy.post_intent(key, p2p_body(new_user()), user_id=new_user())
        assert await error_of(refused) == (503, "OVERLOADED")
        assert refused.headers["Retry-After"] == "1"
        assert await busy.writes_by(key) == (0, 0) and await busy.stream_length() == 4

        # The group has read three (pending) and one is still undelivered: lag 1 + pending 3 = 4 > 3.
        await busy.redis.xgroup_create(stage.stream, stage.group, id="0")
        delivered = await busy.redis.xreadgroup(stage.group, "test", {stage.stream: ">"}, count=3)
        await asyncio.sleep(BACKLOG_MEASURE_INTERVAL_S)
        assert (await busy.post_intent(key, p2p_body(new_user()), user_id=new_user())).status == 503

        # Once the stage acknowledges, intents are accepted again (after the next measurement).
        await busy.redis.xack(stage.stream, stage.group, *[entry_id for entry_id, _ in delivered[0][1]])
        await asyncio.sleep(BACKLOG_MEASURE_INTERVAL_S)
        assert (await busy.post_intent(key, p2p_body(new_user()), user_id=new_user())).status == 202


async def test_headers_beyond_the_size_limits_are_refused(make_gateway: MakeGateway) -> None:
    async with make_gateway(http_header_field_bytes_max=512, http_header_line_bytes_max=512) as strict:
        key = await strict.key()
        fits = await strict.send(
            "GET", "/api/pm/balance?currency=THB", key=key, user_id=new_user(), headers={"X-Trace": "t" * 400}
        )
        assert fits.status == 200
        long_field = await strict.send(
            "GET", "/api/pm/balance?currency=THB", key=key, user_id=new_user(), headers={"X-Trace": "t" * 600}
        )
        # Refused by aiohttp's parser before any of our code runs: plain text, not our JSON error.
        assert long_field.status == 400
        long_line = await strict.raw("GET", "/healthz?" + "q" * 600)
        assert long_line.status == 400


SERVE_TIMEOUT_S = 20.0  # to start listening, and to answer /healthz


@contextlib.asynccontextmanager
async def _serving(settings: Settings, postgres_url: str, redis_url: str):  # type: ignore[no-untyped-def]
    listening = asyncio.Event()
    task = asyncio.create_task(
        run_gateway(
            settings,
            database_url=postgres_url,
            redis_url=redis_url,
            ledger_url=postgres_url,
            started=lambda url: listening.set(),
        )
    )
    try:
        await asyncio.wait_for(listening.wait(), SERVE_TIMEOUT_S)
        yield f"http://{settings.http_host}:{settings.http_port}"
    finally:
        task.cancel()
        # Bounded: a gateway that does not stop within its grace is a failure to see, not a hang.
        done, _ = await asyncio.wait([task], timeout=SERVE_TIMEOUT_S + settings.shutdown_grace_s)
        assert done, "run_gateway did not stop when cancelled"
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("access_log", [False, True])
async def test_run_gateway_serves_on_the_configured_port(
    postgres_url: str, redis_url: str, access_log: bool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(http_host="127.0.0.1", http_port=free_port(), http_access_log=access_log)
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    timeout = aiohttp.ClientTimeout(total=SERVE_TIMEOUT_S)
    async with _serving(settings, postgres_url, redis_url) as url, aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url + "/healthz") as response:
            assert response.status == 200
    logged = [record for record in caplog.records if record.name == "aiohttp.access"]
    assert bool(logged) == access_log


def test_runner_options_follow_the_settings() -> None:
    options = runner_options(Settings(http_header_line_bytes_max=1000, http_header_field_bytes_max=2000))
    assert (options["max_line_size"], options["max_field_size"], options["access_log"]) == (1000, 2000, None)
