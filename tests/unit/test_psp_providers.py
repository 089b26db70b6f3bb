"""The PSP client knows providers by configuration, not by channel: each PSP channel names a provider,
each provider's URL and callback secret come from the settings, and a callback verifies only under its
own provider's secret. Channels map their PSP's statuses to one outcome enum."""

from __future__ import annotations

import time

import pytest

import channels
from channels.base import PspChannel
from pm.config.settings import Settings
from pm.domain import psp_signing
from pm.domain.psp import SHOWN_LENGTH_MAX, Provider, PspOutcome, PspReport, shown
from pm.psp.client import PspClient, provider_endpoints

SETTINGS = Settings(
    psp_ipps_url="https://ipps.example/api/",
    psp_qp_url="https://qp.example",
    psp_ipps_callback_secret="i" * 40,
    psp_qp_callback_secret="q" * 40,
    public_url="https://pm.example",
)


def test_every_psp_channel_names_a_configured_provider() -> None:
    psp_channels = [c for c in channels.REGISTRY.values() if isinstance(c, PspChannel)]
    assert {c.name: c.provider for c in psp_channels} == {"IPPS_TRANSFER": Provider.IPPS, "QP_TRANSFER": Provider.QP}
    assert set(provider_endpoints(SETTINGS)) == set(Provider)


def test_each_provider_has_the_url_and_secret_of_its_settings() -> None:
    endpoints = provider_endpoints(SETTINGS)
    assert endpoints[Provider.IPPS].url == "https://ipps.example/api"
    assert endpoints[Provider.QP].url == "https://qp.example"
    assert (endpoints[Provider.IPPS].callback_secret, endpoints[Provider.QP].callback_secret) == ("i" * 40, "q" * 40)
    assert provider_endpoints(Settings()).get(Provider.IPPS).callback_secret is None  # unset: verifies nothing


@pytest.mark.parametrize("provider", list(Provider))
def test_a_callback_verifies_only_under_its_own_providers_secret(provider: Provider) -> None:
    psp = PspClient(SETTINGS)
    secret = provider_endpoints(SETTINGS)[provider].callback_secret
    assert secret is not None
    body = b'{"event_id": "e-1"}'
    headers = {psp_signing.SIGNATURE_HEADER: psp_signing.sign(secret, body, int(time.time()))}
    other = next(p for p in Provider if p is not provider)
    assert psp.callback_signature_ok(provider, headers, body)
    assert not psp.callback_signature_ok(other, headers, body)
    assert not PspClient(Settings()).callback_signature_ok(provider, headers, body)


def test_the_callback_url_names_the_channel() -> None:
    assert PspClient(SETTINGS).callback_url("QP_TRANSFER") == "https://pm.example/psp/QP_TRANSFER/callback"


@pytest.mark.parametrize(
    ("channel", "status", "outcome"),
    [
        ("IPPS_TRANSFER", "SUCCEEDED", PspOutcome.SUCCEEDED),
        ("IPPS_TRANSFER", "DECLINED", PspOutcome.DECLINED),
        ("IPPS_TRANSFER", "PROCESSING", None),
        ("IPPS_TRANSFER", "PAID", None),  # QP's word, not IPPS's
        ("IPPS_TRANSFER", None, None),
        ("QP_TRANSFER", "PAID", PspOutcome.SUCCEEDED),
        ("QP_TRANSFER", "EXPIRED", PspOutcome.EXPIRED),
        ("QP_TRANSFER", "PENDING", None),
        ("QP_TRANSFER", "SUCCEEDED", None),
        ("INTERNAL_P2P", "SUCCEEDED", None),  # an instant channel has no PSP outcome
    ],
)
def test_a_channel_maps_its_psps_statuses_to_one_outcome_enum(channel: str, status: str | None, outcome) -> None:
    assert channels.REGISTRY[channel].outcome(status) is outcome


def test_a_mismatch_quotes_the_psps_values_cut_short() -> None:
    """A PSP's 500-character currency would fill an intent's review text and crowd out the next reason."""
    why = PspReport("SUCCEEDED", 1, "X" * 500).mismatch(30_013, "THB")
    assert why is not None and len(why) < 120, why
    assert why.startswith("reported 1 'XXXX") and why.endswith("… where PM asked for 30013 THB")
    assert PspReport("SUCCEEDED", 30_013, "THB").mismatch(30_013, "THB") is None
    assert shown("THB") == "'THB'" and len(shown("y" * 100)) == SHOWN_LENGTH_MAX
