"""The intents bench/pipeline.py sends: `--mix p2p=70,ipps=20,qp=10` (default p2p=100).

Intent `index` is of a kind chosen by its place in each run of 100 (so any 100 in a row hold the mix
exactly): P2P transfers between the funded senders and another set of users, IPPS withdrawals by the
senders, QP top-ups to the senders' wallets. Async ones go to the Procfile's PSP simulator with its delay;
their amounts end in 00, the simulator's "succeeds at once" behaviour, so every intent must SETTLE.
"""

from __future__ import annotations

from typing import Any

KINDS = {"p2p": "P2P_TRANSFER", "ipps": "IPPS_WITHDRAWAL", "qp": "QP_TOPUP"}
AMOUNT_MINOR = 100  # 1.00 THB; last two digits 00: the simulator pays at once
CURRENCY = "THB"
DESTINATION_REF = "bench-bank-token"  # the Auth Center's opaque payee token (any non-numeric text)
SENDER_ID_BASE = 1_000_000
RECIPIENT_ID_BASE = 2_000_000

Mix = tuple[tuple[str, int], ...]  # (kind, percent), percents summing to 100


def parse_mix(text: str) -> Mix:
    parts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, value = item.partition("=")
        if not separator or name.strip() not in KINDS or not value.strip().isdigit():
            raise ValueError(f"expected KIND=PERCENT with KIND one of {', '.join(KINDS)}; got {item!r}")
        parts[name.strip()] = int(value)
    if sum(parts.values()) != 100:
        raise ValueError(f"the mix's percents must sum to 100; got {text!r}")
    return tuple((kind, percent) for kind, percent in parts.items() if percent)


def kind_of(index: int, mix: Mix) -> str:
    place = index % 100
    for kind, percent in mix:
        if place < percent:
            return kind
        place -= percent
    raise AssertionError(f"mix {mix} does not cover 100")


def operation_types(mix: Mix) -> list[str]:
    return [KINDS[kind] for kind, _ in mix]


def intent_body(index: int, senders: int, mix: Mix) -> tuple[int, dict[str, Any]]:
    """(the user who signs it, the body) of intent `index`."""
    kind = kind_of(index, mix)
    user = SENDER_ID_BASE + index % senders
    body: dict[str, Any] = {"operation_type": KINDS[kind], "amount_minor": AMOUNT_MINOR, "currency": CURRENCY}
    if kind == "p2p":  # recipients paired differently each round
        body["recipient_id"] = RECIPIENT_ID_BASE + (index * 7919) % senders
    elif kind == "ipps":
        body["destination_ref"] = DESTINATION_REF
    return user, body
