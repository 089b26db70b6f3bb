"""PM's side of the payment service providers' HTTP APIs (the simulator plays them: pm/dev/psp_sim.py).

    psp = PspClient(settings)                                    # one per process; `await psp.close()`
    report = await psp.payout_status(Provider.IPPS, reference)   # PspReport; None: the PSP has no such payout
    status = await psp.submit_payout(Provider.IPPS, reference, callback_url=..., ...)  # idempotent
    ok = psp.callback_signature_ok(Provider.IPPS, headers, body)

The client knows providers by configuration (`provider_endpoints`: each one's URL and callback secret),
not by channel: a channel names its provider (`channels/*.py` `provider`) and the callback URL it wants.

Our reference is the intent id, so a retried submit (after a timeout, a crash, a lost answer) names the
same payout and the PSP answers with it instead of paying twice. At most `PSP_CALLS_IN_FLIGHT_MAX` calls
of a process are in flight at once (a stage's batch of 256 asks in waves); each is bounded by
`psp_request_timeout_s` once it runs; a PSP that answers 5xx, times out or cannot be reached raises `PspUnavailable`
(the caller leaves the intent as it is and the status poller brings it back later).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from pm.config.metrics import PSP_CALL_SECONDS, PSP_CALLS
from pm.config.settings import Settings
from pm.domain import psp_signing
from pm.domain.psp import Provider, PspReport

STATUS_LENGTH_MAX = 32
# A full batch (256) asks in two waves, so even against a PSP that times out every call a batch spends at
# most 2 x psp_request_timeout_s (10 s) on it: less than claim_idle_ms (15 s), or its entries would be
# claimed and handled twice meanwhile.
PSP_CALLS_IN_FLIGHT_MAX = 128
# PspUnavailable's reason for a submit the PSP refused with 409: another payment has our reference.
REFERENCE_REUSED = "reference_reused"


class PspUnavailable(Exception):
    """The PSP did not give an answer we can act on (5xx, timeout, connection refused, garbage).

    `reason` is the stable label `pm_psp_calls_total{outcome}` counts it under."""

    def __init__(self, message: str, reason: str = "bad_answer") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProviderEndpoint:
    url: str  # the API's base URL, without a trailing slash
    callback_secret: str | None  # signs its callbacks; None verifies nothing (every callback refused)


def provider_endpoints(settings: Settings) -> dict[Provider, ProviderEndpoint]:
    """Each provider's endpoint, from the settings (PM_PSP_IPPS_URL, PM_PSP_QP_CALLBACK_SECRET, ...)."""
    return {
        Provider.IPPS: ProviderEndpoint(settings.psp_ipps_url.rstrip("/"), settings.psp_ipps_callback_secret or None),
        Provider.QP: ProviderEndpoint(settings.psp_qp_url.rstrip("/"), settings.psp_qp_callback_secret or None),
    }


class PspClient:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = asyncio.Semaphore(PSP_CALLS_IN_FLIGHT_MAX)
        # Unset secrets (no default: pm/psp/secrets.py) verify nothing: every callback is refused.
        self._endpoints = provider_endpoints(settings)
        public = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
        self._public_url = public.rstrip("/")

    def callback_url(self, channel: str) -> str:
        """Where a PSP posts its outcomes for `channel`'s payments (gateway/psp_callbacks.py)."""
        return f"{self._public_url}/psp/{channel}/callback"

    def callback_signature_ok(self, provider: Provider, headers: Mapping[str, str], body: bytes) -> bool:
        secret = self._endpoints[provider].callback_secret
        if secret is None:
            return False
        return psp_signing.verify([secret], headers.get(psp_signing.SIGNATURE_HEADER), body, time.time())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- IPPS payouts, QP payment requests (top-ups) ---------------------------------------------

    async def payout_status(self, provider: Provider, reference: str) -> PspReport | None:
        return await self._status(provider, "payouts", reference)

    async def submit_payout(
        self,
        provider: Provider,
        reference: str,
        *,
        callback_url: str,
        amount_minor: int,
        currency: str,
        destination_ref: str,
        hold_expires_at_s: int,
    ) -> str:
        return await self._submit(
            provider, "payouts", reference, callback_url=callback_url, amount_minor=amount_minor,
            currency=currency, destination_ref=destination_ref, hold_expires_at=hold_expires_at_s,
        )  # fmt: skip

    async def payment_request_status(self, provider: Provider, reference: str) -> PspReport | None:
        return await self._status(provider, "payment-requests", reference)

    async def submit_payment_request(
        self,
        provider: Provider,
        reference: str,
        *,
        callback_url: str,
        amount_minor: int,
        currency: str,
        expires_in_s: int,
    ) -> str:
        return await self._submit(
            provider, "payment-requests", reference, callback_url=callback_url, amount_minor=amount_minor,
            currency=currency, expires_in_s=expires_in_s,
        )  # fmt: skip

    async def _status(self, provider: Provider, collection: str, reference: str) -> PspReport | None:
        """What the PSP has under our reference (status, amount, currency); None when it has nothing."""
        with _counted(provider, "status") as outcome:
            status, body = await self._call("GET", f"{self._endpoints[provider].url}/v1/{collection}/{reference}")
            if status == 404:
                outcome.label = "not_found"
                return None
            return PspReport(_status_of(status, body), body.get("amount_minor"), body.get("currency"))

    async def _submit(self, provider: Provider, collection: str, reference: str, **fields: Any) -> str:
        """Create the payment at the PSP (idempotent by `reference`); its status."""
        payload = {"reference": reference, **fields}
        with _counted(provider, "submit"):
            status, body = await self._call("POST", f"{self._endpoints[provider].url}/v1/{collection}", payload)
            if status == 409:
                # Our reference names another payment at the PSP: never pay against it; an operator looks.
                raise PspUnavailable(f"PSP refused reference {reference}: {REFERENCE_REUSED}", REFERENCE_REUSED)
            return _status_of(status, body)

    # -- transport -------------------------------------------------------------------------------

    async def _call(self, method: str, url: str, payload: Any = None) -> tuple[int, Any]:
        if self._session is None:
            api_key = self._settings.psp_api_key
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.psp_request_timeout_s),
                headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                connector=aiohttp.TCPConnector(limit=PSP_CALLS_IN_FLIGHT_MAX),
            )
        # The timeout runs once a slot is held: a call never times out waiting behind its batchmates.
        async with self._in_flight:
            try:
                async with self._session.request(method, url, json=payload) as response:
                    if response.status >= 500:
                        raise PspUnavailable(f"{method} {url}: PSP answered {response.status}", "http_5xx")
                    body = await response.json(content_type=None)
                    return response.status, body
            except TimeoutError as exc:
                raise PspUnavailable(f"{method} {url}: {exc!r}", "timeout") from exc
            except aiohttp.ClientError as exc:
                raise PspUnavailable(f"{method} {url}: {exc!r}", "connection") from exc
            except ValueError as exc:  # a body that is not JSON
                raise PspUnavailable(f"{method} {url}: {exc!r}", "bad_answer") from exc


@dataclass(slots=True)
class _Outcome:
    label: str = "ok"


@contextlib.contextmanager
def _counted(provider: Provider, operation: str) -> Iterator[_Outcome]:
    """Count and time one call: `ok` unless the body sets another outcome or raises PspUnavailable."""
    outcome = _Outcome()
    started_s = time.perf_counter()
    try:
        yield outcome
    except PspUnavailable as exc:
        outcome.label = exc.reason
        raise
    except asyncio.CancelledError:
        outcome.label = "cancelled"  # the caller's batch was cancelled (shutdown) mid-call
        raise
    except Exception:
        outcome.label = "error"
        raise
    finally:
        PSP_CALL_SECONDS.labels(str(provider), operation).observe(time.perf_counter() - started_s)
        PSP_CALLS.labels(str(provider), operation, outcome.label).inc()


def _status_of(http_status: int, body: Any) -> str:
    if http_status not in (200, 201) or not isinstance(body, dict):
        # A 4xx other than 404/409 (our key refused, a request it cannot read) is our side's problem.
        reason = "refused" if 400 <= http_status < 500 else "bad_answer"
        raise PspUnavailable(f"PSP answered {http_status}: {body!r}", reason)
    status = body.get("status")
    if not isinstance(status, str) or not 0 < len(status) <= STATUS_LENGTH_MAX:
        raise PspUnavailable(f"PSP answered no usable status: {body!r}")
    return status
