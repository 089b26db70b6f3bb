"""What the core knows of payment service providers: which there are, the outcomes that decide a
payment, and the timings every PSP channel counts from its hold (DESIGN.md §4). No I/O.

    timings = PspTimings.from_settings(settings)      # built once per process, at its composition root
    channel.configure(timings)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Provider(enum.StrEnum):
    """A payment service provider PM talks to; its URL and callback secret are configuration
    (pm/psp/client.py `provider_endpoints`), and each PSP channel names the one it uses."""

    IPPS = "ipps"  # payouts: money leaving the wallet
    QP = "qp"  # QR payment requests: top-ups


class PspOutcome(enum.StrEnum):
    """What settles a PSP channel's intent; any other PSP status decides nothing yet."""

    SUCCEEDED = "SUCCEEDED"  # the PSP moved the money: post the hold
    DECLINED = "DECLINED"  # the PSP refused it: void the hold (FAILED PSP_DECLINED)
    EXPIRED = "EXPIRED"  # no money will come (QP's request expired), or PM gave up at its deadline


class _PspTimingSettings(Protocol):
    psp_hold_timeout_s: int
    psp_outcome_deadline_s: int

    @property
    def submit_deadline_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PspTimings:
    """Seconds after a PSP payment's hold: submit before `submit_deadline_s`, give up (void) at
    `outcome_deadline_s`, and the ledger releases the hold at `hold_timeout_s` (the backstop)."""

    hold_timeout_s: int = 900
    submit_deadline_s: int = 300
    outcome_deadline_s: int = 600

    def __post_init__(self) -> None:
        assert 0 < self.submit_deadline_s < self.outcome_deadline_s < self.hold_timeout_s, "submit, give up, expire"

    @classmethod
    def from_settings(cls, settings: _PspTimingSettings) -> PspTimings:
        return cls(settings.psp_hold_timeout_s, settings.submit_deadline_s, settings.psp_outcome_deadline_s)
