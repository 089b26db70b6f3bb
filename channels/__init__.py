"""Payment channels, one module each: adding a channel is adding one file here.

Every module in this package is imported once, and each `Channel` subclass it defines with a `name`
is registered: no list to edit elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

from channels.base import Channel
from ledger.accounts import CURRENCY_LEDGER
from pm.domain.intent import Intent


def _discover() -> dict[str, Channel]:
    registry: dict[str, Channel] = {}
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    pending = list(Channel.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "name" in cls.__dict__:
            assert cls.name not in registry, f"two channels named {cls.name}"
            # A channel carries some currency, each one the ledger has (a PSP channel names its PSP's).
            assert cls.currencies and cls.currencies <= CURRENCY_LEDGER.keys(), (cls.name, cls.currencies)
            registry[cls.name] = cls()
    return registry


REGISTRY: dict[str, Channel] = _discover()


def channel_named(name: str | None) -> Channel | None:
    return REGISTRY.get(name) if name else None


def channel_of(intent: Intent) -> Channel:
    """The channel validation routed the intent to (every intent past validation has a known one)."""
    channel = channel_named(intent.channel)
    assert channel is not None, f"intent {intent.id} has unknown channel {intent.channel}"
    return channel


def carries_psp_outcome(intent: Intent) -> bool:
    """The entry carries a PSP's (signature-checked) status that decides the intent: SUCCEEDED, DECLINED
    or EXPIRED, not one that decides nothing yet (PROCESSING, PENDING)."""
    if intent.psp_status is None:
        return False
    channel = channel_named(intent.channel)
    return channel is not None and channel.outcome(intent.psp_status) is not None


__all__ = ["REGISTRY", "Channel", "carries_psp_outcome", "channel_named", "channel_of"]
