"""The stage handlers on fakes (issue 11): the memory ledger, fakeredis and a fixed rules snapshot, no
database. Validation routes and creates accounts, fees price, dispatch holds (or refuses, or hands a PSP
payment to its connector's stream), settlement posts; a P2P intent walked through every handler ends with
exact balances and a clean ledger (transit back to zero)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import fakeredis
import pytest
import tigerbeetle as tb

from consumers import dispatch, fees, settlement, validation
from consumers.context import FixedRules, StageContext
from ledger import accounts, open_ledger
from ledger.check import run_check
from pm.config.topology import load_topology
from pm.domain.cel import ProductionEngine
from pm.domain.intent import ErrorCode, Intent, OperationType, State, Transition
from pm.domain.pricing import FeeKind, FeeRule, RuleSet
from pm.domain.rules import Route, Rules

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ALICE, BOB = 1001, 1002
ROUTES = (
    Route("P2P_TRANSFER", 1, 10**10, "INTERNAL_P2P", 10, currencies=frozenset({"THB", "USD"})),
    # More than IPPS carries, as a row edited by hand could say: validation still refuses USD.
    Route("IPPS_WITHDRAWAL", 1, 10**10, "IPPS_TRANSFER", 20, currencies=frozenset({"THB", "USD"})),
)
ONE_PERCENT = FeeRule(
    id=1, version=1, name="one percent", operation_type="P2P_TRANSFER", channel=None, condition="true",
    amount="amount / 100", kind=FeeKind.PRE, priority=1, min_fee_minor=0, max_fee_minor=None,
    valid_from=None, valid_to=None, enabled=True, currency="THB",
)  # fmt: skip


def rules(*fee_rules: FeeRule) -> Rules:
    return Rules(generation=1, routes=ROUTES, limit_rules=(), fees=RuleSet(ProductionEngine(), fee_rules))


@pytest.fixture
async def context() -> AsyncIterator[StageContext]:
    redis = fakeredis.aioredis.FakeRedis()
    async with open_ledger("memory://") as ledger:
        # No pool: these paths read no table (a handler that did would fail here, loudly).
        yield StageContext(
            pool=None, ledger=ledger, redis=redis, topology=load_topology(), rules=FixedRules(rules())
        )  # type: ignore[arg-type]
    await redis.aclose()


def intent(operation: OperationType, amount_minor: int, **fields: object) -> Intent:
    return Intent(
        uuid.uuid4(), State.CREATED, 1, operation, amount_minor, fields.pop("currency", "THB"),
        fields.pop("sender_id", None), fields.pop("recipient_id", None), created_at=NOW, updated_at=NOW, **fields,
    )  # fmt: skip


def after(current: Intent, transition: Transition) -> Intent:
    """The intent as the compare-and-set leaves it (what the next stage's entry carries)."""
    assert transition.intent_id == current.id and transition.expected == current.state
    changes = {
        name: getattr(transition, name)
        for name in ("channel", "fee_pre_minor", "fee_post_minor", "fee_rules", "error_code", "error_message")
        if getattr(transition, name) is not None
    }
    return dataclasses.replace(current, state=transition.new, version=current.version + 1, **changes)


async def fund(context: StageContext, user_id: int, amount_minor: int) -> None:
    """Money from the adjustments account, straight in the ledger (the adjustment channel's own legs are
    another test's business)."""
    source, wallet = accounts.adjustments("THB"), accounts.user(user_id, "THB")
    created = await context.ledger.create_accounts([source.to_tigerbeetle(), wallet.to_tigerbeetle()])
    assert all(result.status in (tb.CreateAccountStatus.CREATED, tb.CreateAccountStatus.EXISTS) for result in created)
    moved = await context.ledger.create_transfers(
        [tb.Transfer(id=tb.id(), debit_account_id=source.id, credit_account_id=wallet.id, amount=amount_minor,
                     ledger=wallet.ledger, code=900)]
    )  # fmt: skip
    assert [result.status for result in moved] == [tb.CreateTransferStatus.CREATED]


async def balance(context: StageContext, user_id: int) -> tuple[int, int]:
    (account,) = await context.ledger.lookup_accounts([accounts.user(user_id, "THB").id])
    return account.credits_posted - account.debits_posted, account.debits_pending


async def test_validation_routes_and_creates_the_accounts_it_will_touch(context: StageContext) -> None:
    payment = intent(OperationType.P2P_TRANSFER, 5_000, sender_id=ALICE, recipient_id=BOB)
    (validated,) = await validation.handle([payment], context)
    assert (validated.new, validated.channel) == (State.VALIDATED, "INTERNAL_P2P")
    names = [accounts.user(ALICE, "THB"), accounts.user(BOB, "THB"), accounts.transit("THB")]
    assert len(await context.ledger.lookup_accounts([account.id for account in names])) == 3


@pytest.mark.parametrize(
    ("asked", "code"),
    [
        (intent(OperationType.QP_TOPUP, 5_000, recipient_id=ALICE), ErrorCode.NO_ROUTE),  # no QP route here
        (intent(OperationType.P2P_TRANSFER, 5_000, sender_id=ALICE, recipient_id=ALICE), ErrorCode.SAME_PARTY),
        (intent(OperationType.P2P_TRANSFER, 5_000, sender_id=ALICE), ErrorCode.INVALID_PARTY),
        (intent(OperationType.P2P_TRANSFER, 5_000, sender_id=ALICE, recipient_id=BOB, currency="JPY"),
         ErrorCode.UNSUPPORTED_CURRENCY),
        # A route takes P2P in THB and USD, none in EUR.
        (intent(OperationType.P2P_TRANSFER, 5_000, sender_id=ALICE, recipient_id=BOB, currency="EUR"),
         ErrorCode.UNSUPPORTED_CURRENCY),
        # The route says USD; IPPS carries only THB.
        (intent(OperationType.IPPS_WITHDRAWAL, 5_000, sender_id=ALICE, destination_ref="tok_unit", currency="USD"),
         ErrorCode.UNSUPPORTED_CURRENCY),
    ],
)  # fmt: skip
async def test_validation_refuses_what_it_cannot_carry_out(context: StageContext, asked: Intent, code) -> None:
    (refused,) = await validation.handle([asked], context)
    assert (refused.new, refused.error_code) == (State.REJECTED, code)


async def test_fees_price_with_the_snapshot_they_are_given(context: StageContext) -> None:
    context.rules = FixedRules(rules(ONE_PERCENT))
    validated = dataclasses.replace(
        intent(OperationType.P2P_TRANSFER, 20_000, sender_id=ALICE, recipient_id=BOB),
        state=State.VALIDATED, version=2, channel="INTERNAL_P2P",
    )  # fmt: skip
    (priced,) = await fees.handle([validated], context)
    assert (priced.new, priced.fee_pre_minor, priced.fee_post_minor) == (State.PRICED, 200, 0)
    assert [(rule["id"], rule["version"]) for rule in priced.fee_rules] == [(1, 1)]


async def test_dispatch_holds_or_refuses_and_hands_a_payout_to_its_connector(context: StageContext) -> None:
    await fund(context, ALICE, 10_000)
    cleared = [
        intent(OperationType.P2P_TRANSFER, 4_000, sender_id=ALICE, recipient_id=BOB),
        intent(OperationType.P2P_TRANSFER, 9_000, sender_id=ALICE, recipient_id=BOB),  # more than is left
        intent(OperationType.IPPS_WITHDRAWAL, 3_000, sender_id=ALICE, destination_ref="tok_unit"),
    ]
    walked = []
    for asked in cleared:
        (validated,) = await validation.handle([asked], context)
        walked.append(dataclasses.replace(after(asked, validated), state=State.CLEARED))
    transitions = {t.intent_id: t for t in await dispatch.handle(walked, context)}
    assert transitions[walked[0].id].new == State.AUTHORIZED
    assert (transitions[walked[1].id].new, transitions[walked[1].id].error_code) == (
        State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS,
    )  # fmt: skip
    assert walked[2].id not in transitions  # CLEARED until its connector has the PSP's answer
    connector = context.topology.connector_of("IPPS_TRANSFER")
    assert await context.redis.xlen(connector.stream) == 1
    assert await balance(context, ALICE) == (10_000, 4_000 + 3_000)  # both holds pending, nothing posted


async def test_a_p2p_intent_walked_through_every_handler_settles_exactly(context: StageContext) -> None:
    context.rules = FixedRules(rules(ONE_PERCENT))
    await fund(context, ALICE, 50_000)
    current = intent(OperationType.P2P_TRANSFER, 20_000, sender_id=ALICE, recipient_id=BOB)
    for handler in (validation.handle, fees.handle):
        (transition,) = await handler([current], context)
        current = after(current, transition)
    current = dataclasses.replace(current, state=State.CLEARED, version=current.version + 1)  # no limit rules
    for handler, expected in ((dispatch.handle, State.AUTHORIZED), (settlement.handle, State.SETTLED)):
        (transition,) = await handler([current], context)
        assert transition.new == expected, transition
        current = after(current, transition)
    assert await balance(context, ALICE) == (50_000 - 20_200, 0)
    assert await balance(context, BOB) == (20_000, 0)
    (fees_account,) = await context.ledger.lookup_accounts([accounts.fees("THB").id])
    assert fees_account.credits_posted == 200
    report = await run_check(context.ledger)
    assert report.ok, report.problems
    assert [t.posted_net for t in report.transit] == [0]
    # A redelivered settlement entry changes nothing: the legs exist, the ledger answers for them.
    (again,) = await settlement.handle([dataclasses.replace(current, state=State.AUTHORIZED)], context)
    assert again.new == State.SETTLED
    assert await balance(context, BOB) == (20_000, 0)
