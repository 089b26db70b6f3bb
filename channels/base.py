"""The channel interface: how an intent's money moves, one file per payment method (DESIGN.md §1, §3).

A channel turns an intent into ledger transfers and, for external channels, talks to a PSP. The stages
(validation, dispatch, settlement) call these methods for a whole batch and make one ledger call per
batch; channels never touch the database or the ledger themselves. Legs follow DESIGN.md §4: every
movement passes through `transit:{currency}` in linked chains, so transit returns to zero.

Every channel declares the currencies it carries (`currencies`, ISO 4217 codes of the ledger's):
validation refuses an intent in any other REJECTED UNSUPPORTED_CURRENCY before anything is held, and the
admin API refuses a route naming one. Instant channels move money between wallet accounts and carry every
ledger currency; a PSP channel carries what its PSP does, and must say so.

Lifecycle, and which stage calls what:
    validation  refusal(intent)            channel-specific checks -> error or None (the parties are
                                           pm/domain/parties.py's, checked before for every channel)
                accounts(intent)           ledger accounts to create on first use
    dispatch    authorize(intent)          the hold: pending transfer(s) into transit
    connector   may_submit(hold, t)        PSP channels: the hold is live and the submit deadline ahead
                submit_one(intent, hold, psp, t)  send to the PSP, by our reference (the only submit)
    settlement  settle(intent)             post the hold and pay out, one linked chain
                void(intent)               release the hold (FAILED)
                status(intent, psp)        PSP channels without an outcome yet: ask the PSP (never submit)
                outcome(status)            which PSP statuses decide the intent
                past_deadline(hold, t)     PSP channels: give up waiting (void, EXPIRED)
    gateway     (gateway/psp_callbacks.py) a signed PSP callback -> the outcome, to settlement

PSP channels (`PspChannel`) count every deadline from the hold's own ledger timestamp (pm.domain.intent.Hold):
    hold ──── submit deadline ──── outcome deadline ──── hold timeout (the ledger releases it)
A payment is submitted only by the channel's PSP connector stage, only while its hold is live and before
the submit deadline; the submit deadline plus a request's timeout comes before the outcome deadline
(pm/config/settings.py), so no submit is still in flight when settlement decides to give up.
"""

from __future__ import annotations

from typing import ClassVar

import tigerbeetle as tb

from ledger import accounts
from ledger.accounts import CURRENCY_LEDGER, NamedAccount, currency_ledger, transfer_id
from pm.domain.intent import OPERATION_CODE, ErrorCode, Hold, Intent, OperationType
from pm.domain.psp import Provider, PspOutcome, PspReport, PspReportMismatch, PspTimings, shown
from pm.psp.client import PspClient

HOLD_LEG = "hold"
POST_LEG = "post"
VOID_LEG = "void"


class Channel:
    """Base class: an instant channel with no PSP. Subclasses set the class variables."""

    name: ClassVar[str]
    operation_types: ClassVar[frozenset[OperationType]]
    # What the channel can move: its accounts exist in every ledger currency (user, merchant, transit, fees).
    currencies: ClassVar[frozenset[str]] = frozenset(CURRENCY_LEDGER)
    settles_instantly: ClassVar[bool] = True
    # True: after the hold, dispatch hands the intent to the channel's PSP connector stage (streams.yaml
    # `connector_for`), which makes it AUTHORIZED; False: dispatch makes it AUTHORIZED itself.
    via_connector: ClassVar[bool] = False
    hold_timeout_s: int = 300  # the ledger releases an unsettled hold after this

    def configure(self, timings: PspTimings) -> None:
        """Called once per process by its composition root (PSP channels take their timings here)."""
        return None

    def refusal(self, intent: Intent) -> tuple[ErrorCode, str] | None:
        return None

    def accounts(self, intent: Intent) -> list[NamedAccount]:
        raise NotImplementedError

    def authorize(self, intent: Intent) -> list[tb.Transfer]:
        raise NotImplementedError

    def settle(self, intent: Intent) -> list[tb.Transfer]:
        raise NotImplementedError

    def void(self, intent: Intent) -> list[tb.Transfer]:
        return [
            tb.Transfer(
                id=transfer_id(intent.id, VOID_LEG),
                pending_id=transfer_id(intent.id, HOLD_LEG),
                user_data_128=intent.id.int,
                flags=tb.TransferFlags.VOID_PENDING_TRANSFER,
            )
        ]

    # -- external channels (settles_instantly = False): the PSP (PspChannel) --------------------

    async def status(self, intent: Intent, psp: PspClient) -> str | None:
        """The PSP's status of our payment; None when the PSP does not know it."""
        raise NotImplementedError(f"channel {self.name} settles instantly; there is no PSP")

    @staticmethod
    def outcome(psp_status: str | None) -> PspOutcome | None:
        """The outcome a PSP status decides (SUCCEEDED, DECLINED or EXPIRED), else None."""
        return None

    # -- helpers for subclasses ----------------------------------------------------------------

    @staticmethod
    def leg(intent: Intent, name: str, debit: NamedAccount, credit: NamedAccount, amount_minor: int) -> tb.Transfer:
        assert amount_minor >= 0, amount_minor
        return tb.Transfer(
            id=transfer_id(intent.id, name),
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount_minor,
            user_data_128=intent.id.int,
            ledger=currency_ledger(intent.currency),
            code=OPERATION_CODE[intent.operation_type],
        )

    def hold(self, intent: Intent, debit: NamedAccount, amount_minor: int) -> tb.Transfer:
        transfer = self.leg(intent, HOLD_LEG, debit, accounts.transit(intent.currency), amount_minor)
        transfer.flags = tb.TransferFlags.PENDING
        transfer.timeout = self.hold_timeout_s
        return transfer

    def pay_out(
        self, intent: Intent, funding: tb.Transfer, payee: NamedAccount, payee_leg: str = "recipient"
    ) -> list[tb.Transfer]:
        """The settlement chain of DESIGN.md §4, linked: `funding` brings a + f into transit (the posted
        hold, or a PSP's money), then transit -> payee a - g and transit -> fees f + g (when above 0)."""
        assert intent.fee_post_minor <= intent.amount_minor, "the fees stage refuses a POST fee above the amount"
        transit = accounts.transit(intent.currency)
        chain = [funding, self.leg(intent, payee_leg, transit, payee, intent.amount_minor - intent.fee_post_minor)]
        fee_minor = intent.fee_pre_minor + intent.fee_post_minor
        if fee_minor > 0:
            chain.append(self.leg(intent, "fees", transit, accounts.fees(intent.currency), fee_minor))
        return linked(chain)

    @staticmethod
    def post_hold(intent: Intent, amount_minor: int) -> tb.Transfer:
        return tb.Transfer(
            id=transfer_id(intent.id, POST_LEG),
            pending_id=transfer_id(intent.id, HOLD_LEG),
            amount=amount_minor,
            user_data_128=intent.id.int,
            flags=tb.TransferFlags.POST_PENDING_TRANSFER,
        )


class PspChannel(Channel):
    """A channel whose money moves at a payment service provider: held at dispatch, submitted by its
    PSP connector stage (streams.yaml `connector_for`), decided by the PSP's outcome in settlement."""

    settles_instantly = False
    via_connector = True
    provider: Provider  # whose API it speaks (pm/psp/client.py knows each provider's URL and secret)
    # What its PSP carries: each PSP channel names its own (no default, the registry checks).
    currencies: ClassVar[frozenset[str]] = frozenset()
    hold_timeout_s = 900
    submit_deadline_s = 300
    outcome_deadline_s = 600

    def configure(self, timings: PspTimings) -> None:
        self.hold_timeout_s = timings.hold_timeout_s
        self.submit_deadline_s = timings.submit_deadline_s
        self.outcome_deadline_s = timings.outcome_deadline_s

    async def submit_one(self, intent: Intent, hold: Hold, psp: PspClient, now_s: float) -> str:
        """Send the payment to the PSP, idempotent by our reference (the intent id); its PSP status.
        Only the connector calls this, and only when `may_submit`."""
        raise NotImplementedError

    def psp_amount_minor(self, intent: Intent) -> int:
        """What the PSP moves for the intent: what PM submits, and what its every report must name."""
        raise NotImplementedError

    async def report(self, intent: Intent, psp: PspClient) -> PspReport | None:
        """What the PSP has under our reference, unchecked; None when it has nothing."""
        raise NotImplementedError

    async def status(self, intent: Intent, psp: PspClient) -> str | None:
        """The PSP's status of our payment; None when the PSP does not know it. PspReportMismatch when what
        it has under our reference is another payment (amount, currency): that status decides nothing."""
        report = await self.report(intent, psp)
        if report is None:
            return None
        self.check_report(intent, report)
        return report.status

    def check_report(self, intent: Intent, report: PspReport) -> None:
        """PspReportMismatch unless the report names the payment PM asked for (amount and currency)."""
        why = report.mismatch(self.psp_amount_minor(intent), intent.currency)
        if why is not None:
            raise PspReportMismatch(f"{self.name} reported {shown(report.status)} for another payment: {why}")

    def may_submit(self, hold: Hold, now_s: float) -> bool:
        """The money is held and the submit deadline is ahead: the PSP may be given the payment."""
        return hold.live(now_s) and now_s < hold.timestamp_s + self.submit_deadline_s

    def pay_by_s(self, hold: Hold) -> float:
        """The last instant the PSP may move the money (the deadline PM gives it at submit): when PM gives
        up (voids the hold) at the outcome deadline, never later than the hold's own expiry. A PSP told
        the hold's expiry could pay in the gap between PM's void and the ledger's timeout, with nothing
        held for it any more. At the deadline settlement asks the PSP once more before it voids."""
        return min(hold.expires_at_s, hold.timestamp_s + self.outcome_deadline_s)

    def past_deadline(self, hold: Hold, now_s: float) -> bool:
        """No outcome yet and too late to wait for one: void the hold and fail the intent EXPIRED."""
        return now_s >= hold.timestamp_s + self.outcome_deadline_s


def linked(chain: list[tb.Transfer]) -> list[tb.Transfer]:
    """Link a chain: every transfer but the last carries LINKED (all or nothing)."""
    assert chain
    for transfer in chain[:-1]:
        transfer.flags |= tb.TransferFlags.LINKED
    assert not chain[-1].flags & tb.TransferFlags.LINKED
    return chain
