"""Proves, on random operation sequences, that the memory and postgres backends answer identically and
keep TigerBeetle's invariants.

Each example makes accounts with random flags, then applies random single transfers, linked chains,
pending/post/void, balancing and closing transfers and retries to two fresh ledgers: a new `memory://`
one and one on a new, empty PostgreSQL database (`fresh_database`). After every step both must return
the same statuses and the same accounts and transfers (all fields but `timestamp`), and each must keep
the invariants of docs/reference/account.md @ 1a56b16f ("The sum of all accounts' debits_pending equals
the sum of all accounts' credits_pending"; the same for posted) and of the balance-limit flags
(debits_posted + debits_pending ≤ credits_posted with debits_must_not_exceed_credits; symmetric for
credits_must_not_exceed_debits). Timeouts are left out: expiry depends on each backend's clock.
"""

from __future__ import annotations

import tigerbeetle as tb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import open_ledger
from tests.support.ledger import AF, AMOUNT_MAX, TF, unique_ledger, without_timestamp

DMNEC = AF.DEBITS_MUST_NOT_EXCEED_CREDITS
CMNED = AF.CREDITS_MUST_NOT_EXCEED_DEBITS

ACCOUNT_FLAGS = st.sampled_from([AF.NONE, DMNEC, CMNED, AF.HISTORY, DMNEC | AF.HISTORY, CMNED | AF.HISTORY])
TRANSFER_FLAGS = st.sampled_from(
    [
        TF.NONE,
        TF.NONE,
        TF.NONE,
        TF.PENDING,
        TF.PENDING,
        TF.BALANCING_DEBIT,
        TF.BALANCING_CREDIT,
        TF.BALANCING_DEBIT | TF.BALANCING_CREDIT,
        TF.PENDING | TF.BALANCING_DEBIT,
        TF.PENDING | TF.CLOSING_DEBIT,
        TF.PENDING | TF.CLOSING_CREDIT,
    ]
)
AMOUNTS = st.one_of(st.integers(0, 300), st.integers(0, 300), st.just(AMOUNT_MAX))
ACCOUNT_INDEX = st.integers(0, 5)  # reduced modulo the number of accounts

SPEC = st.tuples(ACCOUNT_INDEX, ACCOUNT_INDEX, AMOUNTS, TRANSFER_FLAGS)
OPERATION = st.one_of(
    st.tuples(st.just("transfer"), SPEC),
    st.tuples(st.just("chain"), st.lists(SPEC, min_size=2, max_size=3)),
    st.tuples(st.just("fund"), ACCOUNT_INDEX, st.integers(1, 500)),
    st.tuples(st.just("post"), st.integers(0, 50), AMOUNTS),
    st.tuples(st.just("void"), st.integers(0, 50), st.sampled_from([0, 0, 1, 50, 300])),
    st.tuples(st.just("retry"), st.integers(0, 50), st.booleans()),
)
SCENARIO = st.tuples(
    st.lists(ACCOUNT_FLAGS, min_size=2, max_size=5), st.lists(OPERATION, min_size=1, max_size=15)
)


class Scenario:
    """Turns abstract operations into the same `tb.Transfer` batches for both backends."""

    def __init__(self, ledger_number: int, account_flags: list[int]):
        self.L = ledger_number
        self.bank = tb.Account(id=tb.id(), ledger=ledger_number, code=1, flags=AF.NONE)
        self.accounts = [tb.Account(id=tb.id(), ledger=ledger_number, code=1, flags=f) for f in account_flags]
        self.ids = [self.bank.id] + [a.id for a in self.accounts]
        self.flags = {a.id: a.flags for a in [self.bank, *self.accounts]}
        self.submitted: list[tb.Transfer] = []
        self.pendings: list[tb.Transfer] = []

    def _account(self, index: int) -> int:
        return self.accounts[index % len(self.accounts)].id

    def _transfer(self, spec, linked: bool) -> tb.Transfer:
        dr, cr, amount, flags = spec
        return tb.Transfer(
            id=tb.id(),
            debit_account_id=self._account(dr),
            credit_account_id=self._account(cr),
            amount=amount,
            ledger=self.L,
            code=1,
            flags=flags | (TF.LINKED if linked else TF.NONE),
        )

    def _pending_id(self, index: int) -> int:
        return self.pendings[index % len(self.pendings)].id if self.pendings else tb.id()

    def batch(self, op) -> list[tb.Transfer]:
        kind = op[0]
        if kind == "transfer":
            batch = [self._transfer(op[1], linked=False)]
        elif kind == "chain":
            specs = op[1]
            batch = [self._transfer(s, linked=i < len(specs) - 1) for i, s in enumerate(specs)]
        elif kind == "fund":
            batch = [
                tb.Transfer(
                    id=tb.id(),
                    debit_account_id=self.bank.id,
                    credit_account_id=self._account(op[1]),
                    amount=op[2],
                    ledger=self.L,
                    code=1,
                )
            ]
        elif kind in ("post", "void"):
            flags = TF.POST_PENDING_TRANSFER if kind == "post" else TF.VOID_PENDING_TRANSFER
            batch = [tb.Transfer(id=tb.id(), pending_id=self._pending_id(op[1]), amount=op[2], flags=flags)]
        else:  # retry an earlier transfer, exactly or with another amount
            if not self.submitted:
                return []
            earlier = self.submitted[op[1] % len(self.submitted)]
            amount = earlier.amount + 1 if op[2] and earlier.amount < AMOUNT_MAX else earlier.amount
            batch = [
                tb.Transfer(
                    **{**{f: getattr(earlier, f) for f in earlier.__dataclass_fields__}, "amount": amount}
                )
            ]
        for t in batch:
            if op[0] != "retry":
                self.submitted.append(t)
            if t.flags & TF.PENDING:
                self.pendings.append(t)
        return batch


def assert_invariants(accounts: list[tb.Account]) -> None:
    assert sum(a.debits_pending for a in accounts) == sum(a.credits_pending for a in accounts)
    assert sum(a.debits_posted for a in accounts) == sum(a.credits_posted for a in accounts)
    for a in accounts:
        if a.flags & DMNEC:
            assert a.debits_posted + a.debits_pending <= a.credits_posted, a
        if a.flags & CMNED:
            assert a.credits_posted + a.credits_pending <= a.debits_posted, a


async def snapshot(led, scenario: Scenario):
    accounts = await led.lookup_accounts(scenario.ids)
    assert len(accounts) == len(scenario.ids)
    transfers = await led.lookup_transfers([t.id for t in scenario.submitted])
    return accounts, transfers


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=SCENARIO)
async def test_backends_agree_and_keep_invariants(fresh_database, scenario):
    account_flags, operations = scenario
    s = Scenario(unique_ledger(), account_flags)
    postgres_url = await fresh_database()  # an empty database: the ledger creates its own tables
    async with open_ledger("memory://") as memory_ledger, open_ledger(postgres_url) as postgres_ledger:
        backends = {"memory": memory_ledger, "postgres": postgres_ledger}
        for name, led in backends.items():
            results = await led.create_accounts([s.bank, *s.accounts])
            assert {r.status for r in results} == {tb.CreateAccountStatus.CREATED}, name

        for step, op in enumerate(operations):
            batch = s.batch(op)
            if not batch:
                continue
            statuses = {}
            for name, led in backends.items():
                results = await led.create_transfers(batch)
                assert len(results) == len(batch), name
                statuses[name] = [r.status for r in results]
            assert statuses["memory"] == statuses["postgres"], (step, op, batch)

            snapshots = {name: await snapshot(led, s) for name, led in backends.items()}
            mem_accounts, mem_transfers = snapshots["memory"]
            pg_accounts, pg_transfers = snapshots["postgres"]
            assert [without_timestamp(a) for a in mem_accounts] == [
                without_timestamp(a) for a in pg_accounts
            ], (
                step,
                op,
            )
            assert [without_timestamp(t) for t in mem_transfers] == [
                without_timestamp(t) for t in pg_transfers
            ], (
                step,
                op,
            )
            assert_invariants(mem_accounts)
            assert_invariants(pg_accounts)

        # The query side agrees too: each account's transfers (in order) and balance history.
        for account_id in s.ids:
            views = {}
            for name, led in backends.items():
                account_filter = tb.AccountFilter(
                    account_id=account_id,
                    user_data_128=0,
                    user_data_64=0,
                    user_data_32=0,
                    code=0,
                    timestamp_min=0,
                    timestamp_max=0,
                    limit=8189,
                    flags=tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS,
                )
                transfers = await led.get_account_transfers(account_filter)
                balances = await led.get_account_balances(account_filter)
                views[name] = (
                    [t.id for t in transfers],
                    [
                        (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
                        for b in balances
                    ],
                )
            assert views["memory"] == views["postgres"], account_id
            has_history = bool(s.flags[account_id] & AF.HISTORY)
            assert len(views["memory"][1]) == (len(views["memory"][0]) if has_history else 0)
