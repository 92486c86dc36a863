"""The guest write stream of a run: when the guest writes, and where.

``write_rate * duration_s`` writes at uniform random times of the runtime phase;
a fraction ``pt_fraction`` of each batch aims at the page-table pages GVT shadows
(``hot_share`` of those at the hottest ``hot_fraction`` of them), the rest spread
over the AS0 RAM slots by size.  Each write is an 8-byte PTE store at a random
8-byte offset of its page.  Every draw comes from the run's seeded generator.
"""
from __future__ import annotations

import math

import numpy as np

from kvmpt.constants import PAGE_SHIFT, RAM_ROLES
from kvmpt.workload.layouts import Layout
from kvmpt.workload.scenario.definition import Scenario

__all__: list[str] = []


class _Writes:
    """The guest write stream: times, and targets drawn per batch."""

    def __init__(self, sc: Scenario, layout: Layout, rng: np.random.Generator,
                 t_run: float, t_end: float):
        self.sc, self.rng = sc, rng
        n = int(round(sc.write_rate * sc.duration_s))
        self.times = np.sort(rng.uniform(t_run, t_end, n)) if n else np.zeros(0)
        self.pos = 0
        ram = [s for s in layout.with_role(*RAM_ROLES) if s.as_id == 0]     # layout order
        self.ram_base = np.array([s.base_gfn for s in ram], dtype=np.int64)
        self.ram_np = np.array([s.npages for s in ram], dtype=np.int64)
        self.pt = np.zeros(0, dtype=np.int64)
        self.hot = np.zeros(0, dtype=np.int64)

    def set_shadowed(self, gfns) -> None:
        self.pt = np.array(sorted(gfns), dtype=np.int64)
        perm = self.rng.permutation(self.pt.size)
        k = int(math.ceil(self.sc.hot_fraction * self.pt.size))
        self.hot = self.pt[perm[:k]] if k else self.pt

    def take_until(self, t: float) -> int:
        end = int(np.searchsorted(self.times, t, side="right"))
        n, self.pos = end - self.pos, end
        return n

    def rest(self) -> int:
        n, self.pos = self.times.size - self.pos, self.times.size
        return n

    def gpas(self, n: int) -> np.ndarray:
        rng, sc = self.rng, self.sc
        k = int(rng.binomial(n, sc.pt_fraction)) if self.pt.size else 0
        k_hot = int(rng.binomial(k, sc.hot_share)) if k else 0
        parts = []
        if k_hot:
            parts.append(self.hot[rng.integers(0, self.hot.size, k_hot)])
        if k - k_hot:
            parts.append(self.pt[rng.integers(0, self.pt.size, k - k_hot)])
        m = n - k
        if m and self.ram_np.size:
            w = self.ram_np / self.ram_np.sum()
            which = rng.choice(self.ram_np.size, size=m, p=w)
            parts.append(self.ram_base[which] + (rng.random(m) * self.ram_np[which]).astype(np.int64))
        gfns = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        offs = rng.integers(0, 512, gfns.size, dtype=np.int64) << 3     # 8-byte PTE stores
        return ((gfns << PAGE_SHIFT) | offs).astype(np.uint64)
