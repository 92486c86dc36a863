"""Section 5: "kvmgt_page_track_write() reads the hash table without mmu_lock"
(<Y26SI3uh8JV0vvO6@google.com>): the race explorer's verdict for each lock design."""
from __future__ import annotations

import functools
from typing import Any

__all__ = ["lock_verdicts", "lock_verdict"]


def lock_verdicts(scenario: str | None = None, **kw) -> dict[str, Any]:
    """``kvmpt.race.explore`` for each lock design: ``{lock: RaceResult}`` (``kw``: the
    explorer's what-ifs, e.g. ``lockdep=False``)."""
    from kvmpt import race
    sc = scenario or race.DEFAULT_SCENARIO
    return {lk: race.explore(lk, sc, **kw) for lk in race.LOCKS}


@functools.lru_cache(maxsize=16)
def lock_verdict(lock: str, scenario: str | None = None):
    """``kvmpt.race.explore(lock, scenario)`` once per process (the explorer is
    deterministic): what the summary and the dashboard ask for each design's lock."""
    from kvmpt import race
    return race.explore(lock, scenario or race.DEFAULT_SCENARIO)
