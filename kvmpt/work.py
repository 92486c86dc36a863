"""Work accounting: how many primitive operations each hook does.

The model counts primitive operations, not time; ``kvmpt.costs`` turns counts
into cycles.  The primitives:

``gfn_probes``       one ``kvmgt_gfn_is_write_protected()`` lookup (a hash bucket head read)
``chain_steps``      one ``struct kvmgt_pgfn`` visited by ``hash_for_each_possible()``
``counter_updates``  one ``update_gfn_write_track()`` (attempted; a WARN leaves the value)
``lpage_updates``    one ``disallow_lpage`` entry changed (one per huge level: 2M and 1G)
``tlb_flushes``      one ``kvm_flush_remote_tlbs()`` (VM-wide)
``hash_inserts``     one ``kvmgt_protect_table_add()`` (kzalloc + ``hash_add``)
``hash_deletes``     one ``kvmgt_protect_table_del()`` (``hash_del`` + kfree)
``slot_lookups``     one ``gfn_to_memslot()`` under ``srcu_read_lock(&kvm->srcu)``
``zaps``             one ``kvm_mmu_zap_all_fast()``
``srcu_syncs``       one ``synchronize_srcu_expedited()`` in ``kvm_swap_active_memslots()``
``handler_calls``    one ``intel_vgpu_page_track_handler()``
``emulated_writes``  one trapped guest write that went through the x86 emulator

``mmu_lock`` is accounted per write acquisition: the number of acquisitions,
the primitives done while held (``held``), and the longest single hold
(``max_hold``, by number of primitives), because vCPU faults stall behind it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRIMITIVES = (
    "gfn_probes", "chain_steps", "counter_updates", "lpage_updates", "tlb_flushes",
    "hash_inserts", "hash_deletes", "slot_lookups", "zaps", "srcu_syncs",
    "handler_calls", "emulated_writes",
)


def _zero() -> dict[str, int]:
    return dict.fromkeys(PRIMITIVES, 0)


@dataclass
class Work:
    """Counts of primitive operations, with the part done under ``mmu_lock``."""

    ops: dict[str, int] = field(default_factory=_zero)
    held: dict[str, int] = field(default_factory=_zero)
    max_hold: dict[str, int] = field(default_factory=_zero)
    mmu_lock_acquisitions: int = 0
    _hold_depth: int = 0
    _current: dict[str, int] | None = None

    def add(self, primitive: str, n: int = 1) -> None:
        self.ops[primitive] += n
        if self._current is not None:
            self._current[primitive] += n
            self.held[primitive] += n

    # mmu_lock bracketing --------------------------------------------------
    def mmu_lock_begin(self) -> None:
        self.mmu_lock_acquisitions += 1
        self._current = _zero()

    def mmu_lock_end(self) -> None:
        cur = self._current or _zero()
        if sum(cur.values()) > sum(self.max_hold.values()):
            self.max_hold = dict(cur)
        self._current = None

    def add_hold(self, n: int, held: dict[str, int]) -> None:
        """Account ``n`` identical holds, each doing ``held`` (bulk form of begin/add/end)."""
        if n <= 0:
            return
        self.mmu_lock_acquisitions += n
        for k, v in held.items():
            self.ops[k] += v * n
            self.held[k] += v * n
        if sum(held.values()) > sum(self.max_hold.values()):
            self.max_hold = {**_zero(), **held}

    # views ------------------------------------------------------------------
    @property
    def mmu_lock_held_steps(self) -> int:
        return sum(self.held.values())

    @property
    def mmu_lock_max_hold_steps(self) -> int:
        return sum(self.max_hold.values())

    def __getattr__(self, name: str) -> int:
        ops = self.__dict__.get("ops")
        if ops is not None and name in ops:
            return ops[name]
        raise AttributeError(name)

    def merge(self, other: "Work") -> None:
        for k in PRIMITIVES:
            self.ops[k] += other.ops[k]
            self.held[k] += other.held[k]
        self.mmu_lock_acquisitions += other.mmu_lock_acquisitions
        if other.mmu_lock_max_hold_steps > self.mmu_lock_max_hold_steps:
            self.max_hold = dict(other.max_hold)

    def as_dict(self) -> dict[str, int]:
        d = dict(self.ops)
        d["mmu_lock_acquisitions"] = self.mmu_lock_acquisitions
        d["mmu_lock_held_steps"] = self.mmu_lock_held_steps
        d["mmu_lock_max_hold_steps"] = self.mmu_lock_max_hold_steps
        return d


@dataclass
class HookCall:
    """One invocation of a page-track slot hook (or KVM's own zap) during a memslot update.

    ``wasted`` is set when the slot's metadata that this call's counter and
    lpage updates went into is freed by the same memslot update (S7): that
    work had no effect.  ``harmful`` is set when the update then failed and
    the old slot was restored with the changes in place (the v6.5 bug).
    """

    op: int
    hook: str            # "track_flush_slot" | "track_remove_region" | "kvm_mmu_zap_all_fast"
    node: str            # "kvmgt" | "kvm_mmu"
    change: str          # "DELETE" | "MOVE"
    as_id: int
    slot_id: int
    base_gfn: int
    npages: int
    hits: int = 0
    work: Work = field(default_factory=Work)
    wasted: bool = False
    harmful: bool = False

    @property
    def wasted_updates(self) -> int:
        """Counter + lpage updates whose effect was freed right after."""
        if not self.wasted:
            return 0
        return self.work.ops["counter_updates"] + self.work.ops["lpage_updates"]
