"""Run many intents' transfer chains in one ledger request, and read each intent's outcome.

Each intent contributes a contiguous chain; chains are never split across requests (a batch larger
than `ledger_request_events_max` is cut between chains, into as few requests as fit). TigerBeetle
answers a chain applied earlier with `exists` for its first event and `linked_event_failed` for the
rest (an `exists` breaks a chain like any other non-`created` status), so such chains are confirmed by
looking their ids up: one lookup for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import tigerbeetle as tb

from consumers.context import StageContext
from ledger import BATCH_EVENTS_MAX
from pm.domain.intent import Intent

S = tb.CreateTransferStatus
IN_LEDGER = (S.CREATED, S.EXISTS)


class LedgerAnswerError(RuntimeError):
    """The ledger answered something no correct request can get: a bug to look at, not to reject."""


@dataclass(frozen=True, slots=True)
class ChainOutcome:
    intent: Intent
    transfers: list[tb.Transfer]
    statuses: list[tb.CreateTransferStatus]
    in_ledger: bool  # every transfer of the chain exists now (created now or before)

    @property
    def cause(self) -> tb.CreateTransferStatus | None:
        """Why the chain failed: its first status that is neither success nor `linked_event_failed`."""
        for status in self.statuses:
            if status not in (*IN_LEDGER, S.LINKED_EVENT_FAILED):
                return status
        return None


async def run_chains(context: StageContext, chains: list[tuple[Intent, list[tb.Transfer]]]) -> list[ChainOutcome]:
    statuses: list[tb.CreateTransferStatus] = []
    for request in _requests(chains, context.ledger_request_events_max):
        results = await context.create_transfers(request)
        assert len(results) == len(request), "TigerBeetle answers every event"
        statuses.extend(result.status for result in results)

    outcomes: list[ChainOutcome] = []
    to_confirm: list[int] = []
    position = 0
    for intent, transfers in chains:
        chain_statuses = statuses[position : position + len(transfers)]
        position += len(transfers)
        created = all(status in IN_LEDGER for status in chain_statuses)
        maybe_earlier = chain_statuses[0] == S.EXISTS and all(
            status in (S.EXISTS, S.LINKED_EVENT_FAILED) for status in chain_statuses[1:]
        )
        if maybe_earlier and not created:
            to_confirm.extend(t.id for t in transfers)
        outcomes.append(ChainOutcome(intent, transfers, chain_statuses, created))
    assert position == len(statuses)

    if to_confirm:
        found = {t.id for t in await context.lookup_transfers(to_confirm)}
        outcomes = [
            outcome
            if outcome.in_ledger
            else ChainOutcome(
                outcome.intent,
                outcome.transfers,
                outcome.statuses,
                all(t.id in found for t in outcome.transfers),
            )
            for outcome in outcomes
        ]
    return outcomes


def _requests(chains: list[tuple[Intent, list[tb.Transfer]]], events_max: int) -> list[list[tb.Transfer]]:
    assert 0 < events_max <= BATCH_EVENTS_MAX
    requests: list[list[tb.Transfer]] = [[]]
    for _, transfers in chains:
        assert 0 < len(transfers) <= events_max, "a chain longer than a request could never be applied"
        if len(requests[-1]) + len(transfers) > events_max:
            requests.append([])
        requests[-1].extend(transfers)
    return [request for request in requests if request]
