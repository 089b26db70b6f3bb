"""Process layouts bench/pipeline.py runs side by side: which `pm run` types, how many of each.

- `one-per-type`: the Procfile, one process per type (or `--processes` counts): ten Python processes
  on the machine, each stage its own process.
- `all`: `pm run all` in one process (gateway, every stage as a task, poller, outbox), plus the PSP
  simulator: every stage is still a consumer group of its own.
- `per-core`: one `pm run all` per CPU core (their gateways share the HTTP port with SO_REUSEPORT; the
  pollers and outbox workers are safe several at once), plus the simulator.
- `stages`: the gateway, `pm run stages` (every stage and the poller as tasks of one process) and the
  outbox worker, plus the simulator.
- `two-groups`: the gateway, the stages in two processes (`pm run validation,fees,limits` and the rest
  with the poller and the connectors) and the outbox worker, plus the simulator.

A type that is no Procfile line (`all`, `stages`, a comma-separated group) is started as `pm run TYPE`.
"""

from __future__ import annotations

import os

LAYOUTS = ("one-per-type", "all", "per-core", "stages", "two-groups")
ALL_TYPE = "all"  # `pm run all`
STAGES_TYPE = "stages"  # `pm run stages`: every stage and the poller as tasks of one process
FIRST_GROUP = "validation,fees,limits"
SECOND_GROUP = "dispatch,settlement,history,poller,ipps-connector,qp-connector"


def parse_layouts(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in LAYOUTS]
    if not names or unknown:
        raise ValueError(f"layouts are a comma-separated list of {', '.join(LAYOUTS)}; got {text!r}")
    return list(dict.fromkeys(names))


def layout_counts(name: str, procfile_counts: dict[str, int], cores: int | None = None) -> dict[str, int]:
    """Process type -> count for a layout (`procfile_counts`: the one-per-type layout, from --processes)."""
    if name == "one-per-type":
        return dict(procfile_counts)
    if name == "all":
        return {ALL_TYPE: 1, "psp-sim": 1}
    if name == "per-core":
        return {ALL_TYPE: max(1, cores if cores is not None else os.cpu_count() or 1), "psp-sim": 1}
    if name == "stages":
        return {"gateway": 1, STAGES_TYPE: 1, "outbox": 1, "psp-sim": 1}
    if name == "two-groups":
        return {"gateway": 1, FIRST_GROUP: 1, SECOND_GROUP: 1, "outbox": 1, "psp-sim": 1}
    raise ValueError(f"unknown layout {name!r}")
