"""A guest write: arch/x86/kvm/mmu/mmu.c's fault path and x86.c's emulated write.

:class:`GuestWrites` is the part of :class:`kvmpt.kernel.vm.VM` that mirrors what a vCPU's
store does: ``search_memslots()``; no slot or a READONLY one is an exit to the VMM
(MMIO); a write-tracked gfn faults (``page_fault_handle_page_track()`` ->
``RET_PF_EMULATE``), is emulated (``emulator_write_phys()``) and notifies the
page-track users (``kvm_page_track_write()``); otherwise the store completes.
``guest_write_batch`` runs many in the Numba kernel ``kvmpt.kernels.writes`` and
books them in the same functions as the plain path.
"""
from __future__ import annotations

import numpy as np

from kvmpt.constants import WRITE_OUTCOMES
from kvmpt.kernel.kvm_main import _u
from kvmpt.kernel.memslot import KVM_MEM_READONLY, PAGE_SIZE
from kvmpt.kernel.page_track import gpa_to_gfn

#: what a guest write does (the batch kernel's codes index this tuple)


class GuestWrites:
    """Guest writes, mixed into :class:`kvmpt.kernel.vm.VM`."""

    def _fault(self, gfn: int, as_id: int) -> str:
        """What the store's fault path decides: ``"mmio"`` (no slot or a READONLY one),
        ``"direct"`` (not write-tracked) or ``"trapped"`` (``page_fault_handle_page_track()``
        -> ``RET_PF_EMULATE``)."""
        slot = self._as[as_id].find_gfn(gfn)
        if slot is None or slot.flags & KVM_MEM_READONLY:
            return "mmio"
        if not slot.arch.gfn_write_track[gfn - slot.base_gfn]:
            return "direct"
        return "trapped"

    def _classify(self, gfn: int, as_id: int) -> str:
        """Where a guest write to ``gfn`` goes, without side effects."""
        fault = self._fault(gfn, as_id)
        if fault != "trapped":
            return fault
        gvt = self.kvmgt
        if gvt is not None and gvt.attached and gfn in gvt.ptable:
            return "handled"
        return "ignored"

    def guest_write(self, gpa: int, nbytes: int = 8, as_id: int = 0) -> str:
        """A vCPU stores ``nbytes`` at ``gpa`` (``as_id`` 1 = a vCPU in SMM).

        * ``"mmio"``: no memslot holds the gfn, or a ``KVM_MEM_READONLY`` one does: the
          store exits to the VMM (``KVM_EXIT_MMIO``); no page-track notifier sees it
          (``kvm_page_track_write()`` runs only after ``emulator_write_phys()``
          wrote guest memory).
        * ``"direct"``: the gfn is not write-tracked; the store completes in the guest
          (a read-only SPTE left behind by an earlier track is made writable by the
          fault, since ``mmu_try_to_unsync_pages()`` finds the count 0).
        * ``"ignored"``: the gfn is write-tracked, so the store faults
          (``page_fault_handle_page_track()`` -> ``RET_PF_EMULATE``) and is emulated
          (``emulator_write_phys()``), but no tracker takes it: KVMGT's ``ptable``
          lacks it, or no KVMGT is attached.
        * ``"handled"``: trapped, emulated, and ``kvm_page_track_write()`` ran KVMGT's
          ``track_write``, which found the gfn in ``ptable`` and called GVT's handler.

        A write to a gfn GVT shadows that is not ``"handled"`` is counted as
        missed in ``vm.write_stats``.
        """
        gpa = _u("gpa", gpa, 64)
        nbytes = _check_nbytes(nbytes)
        if (gpa & (PAGE_SIZE - 1)) + nbytes > PAGE_SIZE:
            raise ValueError(f"a {nbytes}-byte write at {gpa:#x} crosses a 4 KiB page; "
                             "the emulator splits it: issue one write per page")
        self._memslots(as_id)
        gfn = gpa_to_gfn(gpa)
        outcome = self._fault(gfn, as_id)
        if outcome == "trapped":
            # emulated: kvm_page_track_write() -> __kvm_page_track_write()
            handled = False
            for node in list(self.track_notifier_list):
                if node.external and node.owner is not None:
                    handled |= node.owner.track_write(gpa, nbytes)
            outcome = "handled" if handled else "ignored"
        gvt = self.kvmgt
        missed = gvt is not None and outcome != "handled" and bool(gvt.page_track_tree.get(gfn))
        self._book_writes({outcome: 1, "missed": int(missed)})
        return outcome

    def _book_writes(self, counts: dict[str, int]) -> None:
        """``write_stats`` and the Work of guest writes (counts by outcome, plus
        "missed"), for the plain path and the write kernel alike: an emulated write
        per "handled"/"ignored", an exit to the VMM per "mmio".  KVMGT's own work
        is booked by ``KVMGT._track_write_section``."""
        for k, v in counts.items():
            self.write_stats[k] += int(v)
        self.work.add("emulated_writes", int(counts.get("handled", 0) + counts.get("ignored", 0)))
        self.work.add("mmio_exits", int(counts.get("mmio", 0)))

    def guest_write_batch(self, gpas, as_id: int = 0, outcomes: bool = False,
                          nbytes: int = 8):
        """``guest_write(gpa, nbytes, as_id)`` for every gpa of ``gpas`` (a NumPy uint64
        array); with ``vm.kernels`` in one jitted kernel
        (``kvmpt.kernels.writes.page_track_write_batch``).

        Returns a :class:`WriteBatchResult`: a mapping with keys "direct", "ignored",
        "handled", "mmio", "missed" (the counts of this batch); with
        ``outcomes=True`` its ``.outcomes`` (uint8 codes into ``WRITE_OUTCOMES``) and
        ``.missed`` (bool) hold per-write results.  ``write_stats``, ``work`` and
        ``lockdep`` change as N calls would (lockdep's reports in order of kind).
        Where KVMGT's handler changes state (failsafe mode) the kernel stops before
        the first such write and the plain path does the rest.
        """
        gpas = as_u64_array(gpas, "gpas")
        nbytes = _check_nbytes(nbytes)
        self._memslots(as_id)
        as_id = int(as_id)
        res = WriteBatchResult(dict.fromkeys(WRITE_OUTCOMES + ("missed",), 0))
        if outcomes:
            res.outcomes = np.zeros(gpas.shape[0], dtype=np.uint8)
            res.missed = np.zeros(gpas.shape[0], dtype=bool)
        before = dict(self.write_stats)
        start = self._write_batch_kernel(gpas, as_id, nbytes, res) if self.kernels else 0
        code = {name: i for i, name in enumerate(WRITE_OUTCOMES)}
        for i in range(start, gpas.shape[0]):
            m = self.write_stats["missed"]
            o = self.guest_write(int(gpas[i]), nbytes, as_id)
            if outcomes:
                res.outcomes[i] = code[o]
                res.missed[i] = self.write_stats["missed"] != m
        res.update({k: self.write_stats[k] - before[k] for k in before})
        return res

    def _write_batch_kernel(self, gpas: np.ndarray, as_id: int, nbytes: int,
                            res: "WriteBatchResult") -> int:
        """The kernel part of ``guest_write_batch``: returns where the plain path takes
        over (the length of ``gpas`` when the kernel did every write)."""
        from kvmpt.kernels import writes as kw
        crossing = kw.first_page_crossing(gpas, nbytes)
        if crossing >= 0:
            raise ValueError(f"a {nbytes}-byte write at {int(gpas[crossing]):#x} crosses a "
                             "4 KiB page; the emulator splits it: issue one write per page")
        gvt = self.kvmgt
        tracker = gvt if gvt is not None and gvt.attached else None
        sa = self._slot_arrays(as_id)
        pt = self._ptable_arrays(tracker.ptable) if tracker else self._flat_of(
            "empty-ptable", _empty_ptable)
        shadow_tab, shadow_shift, has_shadow = self._shadow_set()
        miss_tab, miss_shift, has_miss = self._miss_set(as_id, sa, tracker, pt)
        out_o = res.outcomes if res.outcomes is not None else np.zeros(1, dtype=np.uint8)
        out_m = res.missed if res.missed is not None else np.zeros(1, dtype=np.bool_)
        stats = np.zeros(kw.S_LEN, dtype=np.int64)
        kw.page_track_write_batch(
            gpas, sa.base, sa.npages, sa.trap, sa.counter_addrs, tracker is not None,
            pt.shift, pt.head, pt.nxt, pt.key, pt.occ, shadow_tab, shadow_shift, has_shadow,
            miss_tab, miss_shift, has_miss, bool(tracker and tracker.failsafe),
            res.outcomes is not None, out_o, out_m, stats)
        counts = {name: int(stats[kw.S_OUTCOME + i]) for i, name in enumerate(WRITE_OUTCOMES)}
        counts["missed"] = int(stats[kw.S_MISSED])
        self._book_writes(counts)
        if tracker is not None:
            kinds = [(kw.NOT_FOUND, False, False), (kw.FOUND_NOT_SHADOWED, True, False),
                     (kw.FOUND_SHADOWED, True, True)]
            for k, found, shadowed in sorted(kinds, key=lambda x: stats[kw.S_KIND_FIRST + x[0]]):
                calls = int(stats[kw.S_KIND_N + k])
                if calls:
                    with tracker._track_write_section(found, shadowed, calls,
                                                      int(stats[kw.S_KIND_STEPS + k]),
                                                      int(stats[kw.S_KIND_LONGEST + k])):
                        pass
        return int(stats[kw.S_STOP])

    # ----------------------------------------------- flat arrays for the kernels
    def _flat_of(self, key, build, version=None):
        """``build()``, cached under ``key`` for this generation (and ``version``)."""
        stamp = (self.generation, version)
        hit = self._flat.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = build()
        self._flat[key] = (stamp, value)
        return value

    def _slot_arrays(self, as_id: int):
        from kvmpt.kernel.flat import slots_as_arrays
        return self._flat_of(("slots", as_id), lambda: slots_as_arrays(self._as[as_id].sorted()))

    @staticmethod
    def _ptable_arrays(pt):
        """KVMGT's ``ptable`` as the kernels' flat hlist, cached on the table per its own
        generation (``ProtectTable.gen``, bumped by every add/delete/destroy)."""
        from kvmpt.kernel.flat import build_ptable_arrays
        if pt.flat is None or pt.flat[0] != pt.gen:
            pt.flat = (pt.gen, build_ptable_arrays(pt))
        return pt.flat[1]

    @staticmethod
    def _remember_ptable_arrays(pt, arr) -> None:
        """``arr`` (a kernel's copy, changed as ``pt`` now is) is ``pt``'s flat form."""
        pt.flat = (pt.gen, arr)

    def _shadowed(self) -> np.ndarray:
        tree = self.kvmgt.page_track_tree if self.kvmgt is not None else {}
        return np.fromiter((g for g, t in tree.items() if t), dtype=np.uint64)

    def _shadow_set(self):
        """The gfns GVT shadows as the write kernel's set: (table, shift, any)."""
        def build():
            from kvmpt.kernels.common import set_build
            keys = self._shadowed()
            return (*set_build(keys), keys.size > 0)
        return self._flat_of("shadowed", build)

    def _miss_set(self, as_id, sa, tracker, pt):
        """The shadowed gfns whose writes from ``as_id`` would not be handled now."""
        def build():
            from kvmpt.kernels.common import set_build
            from kvmpt.kernels.writes import HANDLED, write_outcomes
            gfns = self._shadowed()
            codes = write_outcomes(gfns, sa.base, sa.npages, sa.trap, sa.counter_addrs,
                                   tracker is not None, pt.shift, pt.head, pt.nxt, pt.key,
                                   pt.occ)
            keys = gfns[codes != HANDLED]
            return (*set_build(keys), keys.size > 0)
        return self._flat_of(("missed", as_id), build,
                             tracker.ptable.gen if tracker is not None else None)


class WriteBatchResult(dict):
    """Counts by outcome: keys "direct", "ignored", "handled", "mmio", "missed";
    ``.outcomes`` (uint8 codes into ``WRITE_OUTCOMES``) and ``.missed`` (bool) per
    write when asked for with ``outcomes=True``, else None."""

    outcomes: np.ndarray | None = None
    missed: np.ndarray | None = None


def _check_nbytes(nbytes) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) \
            or not 1 <= nbytes <= 8:
        raise ValueError(f"nbytes must be 1..8 (one emulated store), got {nbytes!r}")
    return int(nbytes)


def as_u64_array(values, what: str = "gpas") -> np.ndarray:
    """A 1-D array of non-negative integers (gpas or gfns) as contiguous uint64."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError(f"{what} must be non-negative")
    return np.ascontiguousarray(a, dtype=np.uint64)


def _empty_ptable():
    from kvmpt.kernel.flat import empty_ptable_arrays
    return empty_ptable_arrays()
