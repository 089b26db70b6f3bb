"""Finish (SETTLED | REJECTED | FAILED): the pipeline's last step for a final intent.

Gives back the limit places of the batch's REJECTED and FAILED intents (one Redis round trip,
consumers/limits.py), then marks the intents `finished` in one SQL statement, so the status poller
stops re-driving them. No state changes here. The app's status messages and the users' history rows
are the outbox worker's (pm/outbox_feed.py), from the event rows the final transition wrote.
"""

from __future__ import annotations

from consumers.context import StageContext
from consumers.limits import release_refused
from pm.domain import TERMINAL_STATES, Intent, Transition

_FINISH_SQL = "UPDATE pm.intent SET finished = true WHERE id = ANY($1::uuid[]) AND NOT finished"


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    finished = [intent for intent in intents if intent.state in TERMINAL_STATES]
    # Before they are marked finished: should Redis fail, the poller re-drives the intents too.
    await release_refused(finished, context)
    await context.pool.execute(_FINISH_SQL, [intent.id for intent in finished])
    return []
