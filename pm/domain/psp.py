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


@dataclass(frozen=True, slots=True)
class PspReport:
    """What a PSP says of one of our payments, in a callback or a status answer: its status, and the
    amount and currency of the payment it has under our reference (both always sent: README "PSP
    simulator", the API), kept as sent so that a wrong type is a mismatch too."""

    status: str
    amount_minor: object
    currency: object

    def mismatch(self, amount_minor: int, currency: str) -> str | None:
        """Why this is not the payment PM asked for (`amount_minor` in `currency`), or None when it is."""
        same_amount = type(self.amount_minor) is int and self.amount_minor == amount_minor  # not a bool, not 1.0
        if same_amount and self.currency == currency:
            return None
        reported = f"{shown(self.amount_minor)} {shown(self.currency)}"
        return f"reported {reported} where PM asked for {amount_minor} {currency}"


# Characters of a PSP's own value quoted in a review reason: a reason is at most 500 characters
# (pm/store/reviews.py), and a PSP's 500-character currency must not fill it and crowd out the next.
SHOWN_LENGTH_MAX = 32


def shown(value: object) -> str:
    """A value the PSP sent, as a review reason quotes it: its repr, cut to SHOWN_LENGTH_MAX characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_LENGTH_MAX else text[: SHOWN_LENGTH_MAX - 1] + "…"


class PspReportMismatch(Exception):
    """A PSP reported a payment other than the one PM asked for (another amount or currency): PM decides
    nothing on that word (no post, no void) and flags the intent for an operator."""


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
