"""Fuzzes every operation of `GET /openapi.json` with schemathesis against a real gateway (served on a
real port, on a fresh database of the embedded PostgreSQL and the embedded Valkey): every request is
signed with an admin key by `pm.domain.signing` (the signature covers whatever schemathesis generated:
path, query, X-User-Id, Idempotency-Key and body), valid and invalid inputs alike, and every answer must
be no server error and within what the document says (its status, content type, headers and body
schema). Each operation gets up to CASES_PER_OPERATION cases (Hypothesis stops earlier only when an
operation's inputs are exhausted, e.g. /healthz, which has none). What it found is kept as plain tests
in test_gateway_fuzz_findings.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import openapi_document
from pm.config.constants import KEY_REQUESTS_PER_S_MAX
from pm.config.settings import Settings
from pm.domain import signing
from pm.store import balance_snapshots, keys
from pm.store.balance_snapshots import SnapshotRow
from pm.store.migrate import migrate
from tests.support.gateway import ADMIN_OPERATIONS, Key, isolated_topology
from tests.support.served_gateway import served_gateway

pytestmark = pytest.mark.slow

CASES_PER_OPERATION = 200
REQUEST_TIMEOUT_S = 15.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Operations without any input: Hypothesis runs them once, however many cases are asked for.
WITHOUT_INPUTS = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json"}


class SignedBy(requests.auth.AuthBase):
    """Signs a request as it will be sent: its method, path and query as encoded, its headers, its bytes."""

    def __init__(self, key: Key) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path, _, raw_query = (request.path_url or "/").partition("?")
        body = request.body or b""
        headers = signing.sign_headers(
            key_id=self.key.key_id,
            secret=self.key.secret,
            method=request.method or "GET",
            path=path,
            raw_query=raw_query,
            body=body.encode() if isinstance(body, str) else body,
            user_id=request.headers.get(signing.HEADER_USER_ID),
            idempotency_key=request.headers.get(signing.HEADER_IDEMPOTENCY_KEY),
        )
        request.headers.update(headers)
        return request


@pytest.fixture(scope="module")
async def fuzz_database(fresh_database) -> tuple[str, Key]:  # type: ignore[no-untyped-def]
    """A database of its own: the fuzzer creates fee rules, limit rules and routes at random."""
    database_url = await fresh_database()
    await migrate(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        api_key, secret = await keys.create_key(
            connection,
            f"fuzz-{uuid.uuid4().hex[:8]}",
            ["admin"],
            operations=ADMIN_OPERATIONS,
            requests_per_s=KEY_REQUESTS_PER_S_MAX,  # the fuzzer's cases, not its rate, are under test
        )
        # Rows for GET /admin/balances to answer (this database's ledger is empty): a named user's with a
        # hold, and an account of a ledger PM has no currency for, not named.
        await balance_snapshots.write_page(connection, [
            SnapshotRow(account_id=2**127 + 1, ledger=764, currency="THB", code=1, kind="user", name="user:7:THB",
                        user_id=7, merchant_id=None, debits_pending=5, debits_posted=10, credits_pending=0,
                        credits_posted=2**100, ledger_timestamp=1_700_000_000_000_000_000),
            SnapshotRow(account_id=3, ledger=999, currency=None, code=42, kind="unknown", name=None, user_id=None,
                        merchant_id=None, debits_pending=0, debits_posted=7, credits_pending=1, credits_posted=0,
                        ledger_timestamp=0),
        ])  # fmt: skip
    finally:
        await connection.close()
    return database_url, Key(api_key.key_id, secret)


@pytest.fixture(scope="module")
def fuzz_base_url(fuzz_database: tuple[str, Key], redis_url: str) -> Iterator[str]:
    database_url, _ = fuzz_database
    with served_gateway(Settings(), database_url, redis_url, isolated_topology()) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def signed_session(fuzz_database: tuple[str, Key]) -> Iterator[requests.Session]:
    """One keep-alive session for every case, each request signed as it leaves."""
    with requests.Session() as session:
        session.auth = SignedBy(fuzz_database[1])
        yield session


# The document the gateway serves at /openapi.json (the first test checks they are the same). Loaded
# here rather than from the fixture's URL because schemathesis's lazy loader (`from_fixture`) does not
# run on pytest 9.2 (it sets a pytest-internal `_nodeid` that 9.2 no longer has).
schema = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {result.ok().label: result.ok() for result in schema.get_all_operations()}
FUZZ_SETTINGS = settings(
    max_examples=CASES_PER_OPERATION,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # CI runs the same cases every time; change the database seed to explore
)


def test_the_fuzzed_document_is_the_one_the_gateway_serves(fuzz_base_url: str) -> None:
    served = requests.get(f"{fuzz_base_url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    assert served.status_code == 200 and served.json() == openapi_document()


# One test per operation, named by it (`[POST /intents]`), each drawing its cases from the operation's own
# strategy. Not `@schema.parametrize()`: its tests all share one node id, which pytest-xdist cannot tell
# apart (it ran one operation's cases only).
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_answers_as_documented(
    label: str, fuzz_base_url: str, signed_session: requests.Session
) -> None:
    cases_run = 0

    @FUZZ_SETTINGS
    @given(case=OPERATIONS[label].as_strategy())
    def answers_as_documented(case: schemathesis.Case) -> None:
        nonlocal cases_run
        cases_run += 1
        case.call_and_validate(
            base_url=fuzz_base_url, session=signed_session, checks=CHECKS, timeout=REQUEST_TIMEOUT_S
        )

    answers_as_documented()
    # Hypothesis stops early only when an operation's inputs run out: only those without any.
    assert cases_run >= (1 if label in WITHOUT_INPUTS else CASES_PER_OPERATION), cases_run
