"""Fee pricing throughput: intents priced per second by the fees stage's pricing function, per CEL engine.

    python bench/fees.py                         # production 50,000 intents, reference 300, 20 rules
    python bench/fees.py --intents 100000 --reference-intents 1000 --cpu 0 --json
    python bench/fees.py --one-by-one            # without the combined program: one evaluation per rule

One process, no I/O: 20 enabled rules (10 PRE, 10 POST), all candidates for the P2P intents priced, so
every intent is matched against all 20 (the worst case: a schedule spread over operation types and
channels costs less). Conditions use amounts, tags, the Bangkok hour and the sender; amounts use
integer arithmetic, min and max. The intents (VALIDATED, amounts 1.00 to 100,000.00 THB, zero to three
tags, created over a day) are made up front; timed is `consumers.fees.price(intent, rules)` for each,
what the stage runs per intent (the request, pricing, the PRICED or REJECTED transition). A warm-up
pass compiles the combined programs first, as a running stage has. The first `--reference-intents`
intents are priced by both engines and must get identical transitions. Printed per engine: intents per
wall-clock second and per CPU second of this process (the same on an idle machine; on a shared one the
CPU figure is the one-core rate). Exit 0 when the engines agree and the production engine meets the target.

Target (issue 4): >= 20,000 intents priced/s with the production engine on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.fees import price
from pm.domain import pricing
from pm.domain.cel import ProductionEngine, ReferenceEngine
from pm.domain.intent import Intent, OperationType, State, Transition
from pm.domain.pricing import FeeKind, FeeRule, RuleSet

TARGET_PER_S = 20_000
TAGS = ("vip", "kyc_verified", "risk:low", "risk:high", "merchant", "new_user")
DAY_START = datetime(2026, 3, 1, tzinfo=UTC)

# (condition, amount, kind, min, max): a plausible schedule, most specific first.
RULES = [
    ("'vip' in tags && 'kyc_verified' in tags", "0", "PRE", 0, None),
    ("'risk:high' in tags", "amount / 50", "PRE", 500, 50_000),
    ("amount >= 5000000", "amount / 400", "PRE", 0, 30_000),
    ("amount >= 1000000 && (hour >= 22 || hour < 6)", "(amount * 3 + 500) / 1000", "PRE", 0, 20_000),
    ("'merchant' in tags", "amount * 15 / 1000", "PRE", 100, None),
    ("'new_user' in tags && amount < 100000", "500", "PRE", 0, None),
    ("sender_id % 10 == 7", "amount / 200", "PRE", 0, 5_000),
    ("hour >= 9 && hour < 17 && amount >= 200000", "amount / 150", "PRE", 0, 10_000),
    ("tags.exists(t, t.startsWith('risk:')) && amount > 10000", "amount / 100", "PRE", 100, 10_000),
    ("true", "amount / 100", "PRE", 500, 10_000),
    ("'vip' in tags", "0", "POST", 0, None),
    ("amount < 2000", "0", "POST", 0, None),
    ("'risk:high' in tags && amount >= 50000", "amount / 100", "POST", 0, 20_000),
    ("recipient_id % 2 == 0 && amount >= 3000000", "(amount * 5 + 500) / 1000", "POST", 0, 15_000),
    ("hour >= 22 || hour < 6", "25 + amount / 2000", "POST", 25, 2_500),
    ("'merchant' in tags", "amount / 250", "POST", 0, 8_000),
    ("currency == 'THB' && amount >= 1000000", "amount / 500", "POST", 0, 12_000),
    ("size(tags) >= 3", "15", "POST", 0, None),
    ("channel == 'INTERNAL_P2P' && amount >= 500000", "amount / 1000", "POST", 0, 5_000),
    ("true", "10", "POST", 0, None),
]


def fee_rules() -> list[FeeRule]:
    assert len(RULES) == 20
    return [
        FeeRule(
            id=index + 1,
            version=1,
            name=f"bench {index + 1}",
            operation_type="P2P_TRANSFER",
            channel=None,
            condition=condition,
            amount=amount,
            kind=FeeKind(kind),
            priority=index,
            min_fee_minor=low,
            max_fee_minor=high,
            currency="THB",
        )
        for index, (condition, amount, kind, low, high) in enumerate(RULES)
    ]


def intents(count: int, seed: int) -> list[Intent]:
    chooser = random.Random(seed)
    made = []
    for _ in range(count):
        made.append(
            Intent(
                id=uuid.UUID(int=chooser.getrandbits(128)), state=State.VALIDATED, version=2,
                operation_type=OperationType.P2P_TRANSFER, amount_minor=chooser.randint(100, 10_000_000),
                currency="THB", sender_id=chooser.randint(1, 10**9), recipient_id=chooser.randint(1, 10**9),
                channel="INTERNAL_P2P", tags=tuple(chooser.sample(TAGS, chooser.randint(0, 3))),
                created_at=DAY_START + timedelta(seconds=chooser.randint(0, 86_399)),
            )
        )  # fmt: skip
    return made


def timed(rules: RuleSet, batch: list[Intent]) -> tuple[float, float, list[Transition]]:
    """(wall seconds, CPU seconds of this process, transitions)."""
    started_s, started_cpu_s = time.perf_counter(), time.process_time()
    transitions = [price(intent, rules) for intent in batch]
    return time.perf_counter() - started_s, time.process_time() - started_cpu_s, transitions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=50_000, help="priced with the production engine")
    parser.add_argument("--reference-intents", type=int, default=300, help="priced with the reference engine")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--one-by-one", action="store_true", help="evaluate rule by rule, without the combined program")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    assert 1 <= args.reference_intents <= args.intents <= 10_000_000
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.one_by_one:
        pricing.COMBINED_RULES_MAX = 0  # every candidate set is "too large" to combine

    rules = fee_rules()
    batch = intents(args.intents, args.seed)
    production, reference = RuleSet(ProductionEngine(), rules), RuleSet(ReferenceEngine(), rules)
    timed(production, batch[: min(2_000, len(batch))])  # warm-up: combined programs compiled
    timed(reference, batch[:5])
    results = {}
    for name, rule_set, sample in (
        ("production", production, batch),
        ("reference", reference, batch[: args.reference_intents]),
    ):
        elapsed_s, cpu_s, transitions = timed(rule_set, sample)
        results[name] = {
            "engine": rule_set.engine.name,
            "intents": len(sample),
            "seconds": round(elapsed_s, 3),
            "intents_per_s": round(len(sample) / elapsed_s),
            "cpu_seconds": round(cpu_s, 3),
            "intents_per_cpu_s": round(len(sample) / cpu_s),
            "rejected": sum(1 for t in transitions if t.new == State.REJECTED),
            "transitions": transitions,
        }
    same = results["production"]["transitions"][: args.reference_intents] == results["reference"]["transitions"]
    for result in results.values():
        del result["transitions"]
    summary = {"rules": len(rules), "engines_agree": same, "target_per_s": TARGET_PER_S, **results}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(rules)} rules, all candidates; both engines agree on {args.reference_intents} intents: {same}")
        for name, result in results.items():
            print(
                f"{name:10} {result['engine']:16} {result['intents']:>8,} intents in {result['seconds']:7.3f} s ="
                f" {result['intents_per_s']:>8,} intents/s wall, {result['intents_per_cpu_s']:>8,} per CPU second"
            )
        print(f"target: >= {TARGET_PER_S:,}/s with the production engine on one core (per CPU second)")
    return 0 if same and results["production"]["intents_per_cpu_s"] >= TARGET_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
