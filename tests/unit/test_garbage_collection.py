"""Proves that a `pm run` process freezes its startup objects out of the collector's walks and collects
its youngest generation less often, while cycles made later are still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pm.cli import run as run_command
from pm.config.garbage_collection import GC_GEN0_THRESHOLD, tune_garbage_collector
from pm.config.settings import Settings


@pytest.fixture(autouse=True)
def restored_collector() -> Iterator[None]:
    """The test process's own collector as it was: this worker runs other tests after these."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _tracked_ids() -> set[int]:
    return {id(o) for generation in range(3) for o in gc.get_objects(generation=generation)}


def test_startup_objects_leave_every_generation_and_the_young_threshold_rises() -> None:
    startup_object = [Node()]
    assert id(startup_object) in _tracked_ids()
    tune_garbage_collector()
    assert id(startup_object) not in _tracked_ids()  # frozen: no collection walks it again
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    assert gc.isenabled()


def test_a_cycle_made_after_tuning_is_still_collected() -> None:
    tune_garbage_collector()
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    assert gone() is not None  # a cycle: reference counting alone cannot free it
    gc.collect()
    assert gone() is None


async def test_run_process_tunes_the_collector_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []

    async def serving(settings: Settings) -> None:
        seen.append(gc.get_threshold())

    monkeypatch.setattr("pm.dev.psp_sim.run_psp_sim", serving)
    gc.set_threshold(700, 10, 10)
    await run_command.run_process("psp-sim", Settings(metrics_port=None), "", "", "")
    assert seen == [(GC_GEN0_THRESHOLD, 10, 10)]
