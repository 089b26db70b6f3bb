"""The plumbing floor (bench/pipeline.py --floor): handlers that do no business work at all.

Each stage moves its intents to the next state with no ledger call, no routes and no fees, so a run
through the same streams, runtime and one batched SQL compare-and-set per stage measures what the
pipeline costs before any money logic. Final intents are the outbox worker's, as in a real run.
Used only by the benchmark, through a streams.yaml whose handlers point here.
"""

from __future__ import annotations

from consumers.context import StageContext
from pm.domain.intent import Intent, State, Transition, advance

NEXT_STATE = {
    State.CREATED: State.VALIDATED,
    State.VALIDATED: State.PRICED,
    State.PRICED: State.CLEARED,
    State.CLEARED: State.AUTHORIZED,
    State.AUTHORIZED: State.SETTLED,
}


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    return [
        advance(intent, NEXT_STATE[intent.state], channel="FLOOR" if intent.state == State.CREATED else None)
        for intent in intents
        if intent.state in NEXT_STATE
    ]
