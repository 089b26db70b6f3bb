"""Which PSP secrets a process may start with (DESIGN.md §7: no PSP secret has a default outside the simulator).

    problem = configuration_problem(settings)   # None, or one line saying what to set; callers exit 2

PM holds three PSP secrets: the bearer key it sends to the PSPs (`PM_PSP_API_KEY`) and each PSP's callback
signing secret (`PM_PSP_IPPS_CALLBACK_SECRET`, `PM_PSP_QP_CALLBACK_SECRET`). None has a default: a
callback secret that is in the source would let anyone sign a `PAID` callback and create money. The
simulator's own values (below) are public on purpose: `pm up` and the tests hand them to the fleet
explicitly when it talks to the local simulator, and a process whose PSP URLs are not all the local
simulator's refuses to start while any secret is unset, shorter than `SECRET_BYTES_MIN`, or one of them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pm.config.settings import Settings

# The simulator's values (`pm run psp-sim` uses them when none are set): fine against the simulator,
# refused against anything else.
SIMULATOR_API_KEY = "sandbox-api-key"
SIMULATOR_IPPS_CALLBACK_SECRET = "sandbox-ipps-callback-secret"
SIMULATOR_QP_CALLBACK_SECRET = "sandbox-qp-callback-secret"
SIMULATOR_VALUES = frozenset({SIMULATOR_API_KEY, SIMULATOR_IPPS_CALLBACK_SECRET, SIMULATOR_QP_CALLBACK_SECRET})
# As PM_* variables, for `pm up` and test fleets that run the simulator.
SIMULATOR_ENVIRONMENT = {
    "PM_PSP_API_KEY": SIMULATOR_API_KEY,
    "PM_PSP_IPPS_CALLBACK_SECRET": SIMULATOR_IPPS_CALLBACK_SECRET,
    "PM_PSP_QP_CALLBACK_SECRET": SIMULATOR_QP_CALLBACK_SECRET,
}
# As Settings fields, for tests that build their settings in code.
SIMULATOR_SETTINGS = {
    "psp_api_key": SIMULATOR_API_KEY,
    "psp_ipps_callback_secret": SIMULATOR_IPPS_CALLBACK_SECRET,
    "psp_qp_callback_secret": SIMULATOR_QP_CALLBACK_SECRET,
}
# 256 bits, as `secrets.token_urlsafe(32)` gives: a shorter secret is guessable or a placeholder.
SECRET_BYTES_MIN = 32
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def simulator_secrets(settings: Settings) -> tuple[str, str, str]:
    """The simulator's own (api key, IPPS secret, QP secret): the configured ones, else its public values."""
    return (
        settings.psp_api_key or SIMULATOR_API_KEY,
        settings.psp_ipps_callback_secret or SIMULATOR_IPPS_CALLBACK_SECRET,
        settings.psp_qp_callback_secret or SIMULATOR_QP_CALLBACK_SECRET,
    )


def is_local_simulator(url: str, settings: Settings) -> bool:
    """True for a URL of the simulator this machine runs: plain http on a loopback address, its port."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS and port == settings.psp_sim_port


def configuration_problem(settings: Settings) -> str | None:
    """What is wrong with the PSP secrets for the PSPs these settings call, or None when a process may start."""
    urls = {"PM_PSP_IPPS_URL": settings.psp_ipps_url, "PM_PSP_QP_URL": settings.psp_qp_url}
    real = [name for name, url in urls.items() if not is_local_simulator(url, settings)]
    if not real:
        return None  # only the local simulator: its public values (or none: PSP calls then fail) are fine
    secrets = {
        "PM_PSP_API_KEY": settings.psp_api_key,
        "PM_PSP_IPPS_CALLBACK_SECRET": settings.psp_ipps_callback_secret,
        "PM_PSP_QP_CALLBACK_SECRET": settings.psp_qp_callback_secret,
    }
    # Every secret, not only those of the real PSP: a forged top-up callback against a simulator-configured
    # QP would credit money a real IPPS then pays out.
    for name, secret in secrets.items():
        if secret is None:
            reason = "is unset"
        elif secret in SIMULATOR_VALUES:
            reason = "is the PSP simulator's public value"
        elif len(secret.encode()) < SECRET_BYTES_MIN:
            reason = f"is shorter than {SECRET_BYTES_MIN} bytes"
        else:
            continue
        return (
            f"{name} {reason}, but {' and '.join(real)} is not the local PSP simulator; set each PSP secret"
            f" to the value agreed with that PSP ({SECRET_BYTES_MIN} bytes or more)"
        )
    return None
