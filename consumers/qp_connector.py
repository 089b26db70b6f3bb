"""The QP connector (CLEARED -> AUTHORIZED): creates each top-up's payment request at QP.

Dispatch puts a job per CLEARED top-up on this stage's stream (streams.yaml `qp-connector`,
`connector_for: QP_TRANSFER`). Per batch, every payment request is created at once (idempotent by our
reference, the intent id, so a redelivered job names the same request); then the intents are
AUTHORIZED, and the runtime hands them to settlement, which waits for QP's outcome. A QP that does not
answer fails the batch: its entries are retried (claimed again, then dead-lettered after
`max_deliveries`), and the poller re-drives an intent left CLEARED through dispatch.
"""

from __future__ import annotations

import asyncio

import channels
from consumers.context import StageContext
from pm.domain import Intent, State, Transition, advance


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    waiting = [intent for intent in intents if intent.state == State.CLEARED]
    assert context.psp is not None, "a stage context always has a PSP client"
    psp = context.psp
    sends = []
    for intent in waiting:
        channel = channels.channel_of(intent)
        assert channel.name == "QP_TRANSFER", intent.channel
        sends.append(channel.submit_one(intent, psp))
    await asyncio.gather(*sends)  # PspUnavailable fails the batch: retried entry by entry, then claimed
    return [advance(intent, State.AUTHORIZED) for intent in waiting]
