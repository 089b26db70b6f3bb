"""Limits (PRICED -> CLEARED | REJECTED): daily and monthly caps per user.

No limit rules are configured yet (the money-rules issue brings them): every intent is cleared.
"""

from __future__ import annotations

from consumers.context import StageContext
from pm.domain import Intent, State, Transition, advance


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    return [advance(intent, State.CLEARED) for intent in intents]
