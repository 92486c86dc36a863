"""Work accounting: how many primitive operations each hook does.

The model counts primitive operations, not time; ``kvmpt.workload.costs`` turns counts
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
``emulated_writes``  one guest write that faulted on a write-tracked gfn and went
                     through the x86 emulator (``page_fault_handle_page_track()`` ->
                     ``RET_PF_EMULATE``, ``emulator_write_phys()``): a trapped write
``mmio_exits``       one guest write to a gpa no memslot holds, or to a
                     ``KVM_MEM_READONLY`` slot: an exit to the VMM (``KVM_EXIT_MMIO``);
                     no page-track notifier sees it

``mmu_lock`` (an rwlock) is accounted per acquisition and mode: for write holds
the number of acquisitions, the primitives done while held (``held``) and the
longest single hold (``max_hold``, by number of primitives) -- vCPU faults and
every other ``mmu_lock`` user stall behind them; read holds the same in
``mmu_lock_read_acquisitions``, ``read_held``, ``read_max_hold`` -- they stall
only writers (KVM's zap on a memslot DELETE/MOVE, write-track add/remove), since
with the TDP MMU vCPU faults take the lock for read too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRIMITIVES = (
    "gfn_probes", "chain_steps", "counter_updates", "lpage_updates", "tlb_flushes",
    "hash_inserts", "hash_deletes", "slot_lookups", "zaps", "srcu_syncs",
    "handler_calls", "emulated_writes", "mmio_exits",
)
MODES = ("write", "read")


def _zero() -> dict[str, int]:
    return dict.fromkeys(PRIMITIVES, 0)


@dataclass
class Work:
    """Counts of primitive operations, with the part done under ``mmu_lock``."""

    ops: dict[str, int] = field(default_factory=_zero)
    held: dict[str, int] = field(default_factory=_zero)
    max_hold: dict[str, int] = field(default_factory=_zero)
    mmu_lock_acquisitions: int = 0
    read_held: dict[str, int] = field(default_factory=_zero)
    read_max_hold: dict[str, int] = field(default_factory=_zero)
    mmu_lock_read_acquisitions: int = 0
    _current: dict[str, int] | None = None
    _mode: str = "write"

    def add(self, primitive: str, n: int = 1) -> None:
        self.ops[primitive] += n
        if self._current is not None:
            self._current[primitive] += n
            (self.held if self._mode == "write" else self.read_held)[primitive] += n

    # mmu_lock bracketing --------------------------------------------------
    def mmu_lock_begin(self, mode: str = "write") -> None:
        """``write_lock(&kvm->mmu_lock)`` (or ``read_lock`` with ``mode="read"``)."""
        if mode not in MODES:
            raise ValueError(f"mmu_lock mode must be 'write' or 'read', got {mode!r}")
        if self._current is not None:
            raise RuntimeError("mmu_lock hold opened twice: rwlocks do not nest here")
        if mode == "write":
            self.mmu_lock_acquisitions += 1
        else:
            self.mmu_lock_read_acquisitions += 1
        self._current, self._mode = _zero(), mode

    def mmu_lock_end(self) -> None:
        cur = self._current or _zero()
        attr = "max_hold" if self._mode == "write" else "read_max_hold"
        if sum(cur.values()) > sum(getattr(self, attr).values()):
            setattr(self, attr, dict(cur))
        self._current, self._mode = None, "write"

    def add_hold(self, n: int, held: dict[str, int], mode: str = "write") -> None:
        """Account ``n`` identical holds, each doing ``held`` (bulk form of begin/add/end)."""
        self.add_holds(n, {k: v * n for k, v in held.items()}, held, mode)

    def add_holds(self, n: int, totals: dict[str, int], longest: dict[str, int],
                  mode: str = "write") -> None:
        """Account ``n`` holds that did ``totals`` between them, the longest of them
        ``longest`` (bulk form of ``n`` begin/add/end brackets)."""
        if mode not in MODES:
            raise ValueError(f"mmu_lock mode must be 'write' or 'read', got {mode!r}")
        if n <= 0:
            return
        target = self.held if mode == "write" else self.read_held
        for k, v in totals.items():
            self.ops[k] += v
            target[k] += v
        if mode == "write":
            self.mmu_lock_acquisitions += n
        else:
            self.mmu_lock_read_acquisitions += n
        attr = "max_hold" if mode == "write" else "read_max_hold"
        if sum(longest.values()) > sum(getattr(self, attr).values()):
            setattr(self, attr, {**_zero(), **longest})

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

    @property
    def mmu_lock_read_held_steps(self) -> int:
        return sum(self.read_held.values())

    @property
    def mmu_lock_read_max_hold_steps(self) -> int:
        return sum(self.read_max_hold.values())

    def merge(self, other: "Work") -> None:
        for k in PRIMITIVES:
            self.ops[k] += other.ops[k]
            self.held[k] += other.held[k]
            self.read_held[k] += other.read_held[k]
        self.mmu_lock_acquisitions += other.mmu_lock_acquisitions
        self.mmu_lock_read_acquisitions += other.mmu_lock_read_acquisitions
        if other.mmu_lock_max_hold_steps > self.mmu_lock_max_hold_steps:
            self.max_hold = dict(other.max_hold)
        if other.mmu_lock_read_max_hold_steps > self.mmu_lock_read_max_hold_steps:
            self.read_max_hold = dict(other.read_max_hold)

    def as_dict(self) -> dict[str, int]:
        d = dict(self.ops)
        d["mmu_lock_acquisitions"] = self.mmu_lock_acquisitions
        d["mmu_lock_held_steps"] = self.mmu_lock_held_steps
        d["mmu_lock_max_hold_steps"] = self.mmu_lock_max_hold_steps
        d["mmu_lock_read_acquisitions"] = self.mmu_lock_read_acquisitions
        d["mmu_lock_read_held_steps"] = self.mmu_lock_read_held_steps
        d["mmu_lock_read_max_hold_steps"] = self.mmu_lock_read_max_hold_steps
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

    #: the primitives a hook call makes into a slot's metadata (what ``wasted`` voids)
    WASTED_COUNTERS = ("counter_updates", "lpage_updates")

    @property
    def wasted_counts(self) -> dict[str, int]:
        """The counter and lpage updates whose effect was freed right after (all of
        them when ``wasted``, else none)."""
        return {k: (self.work.ops[k] if self.wasted else 0) for k in self.WASTED_COUNTERS}

    @property
    def wasted_updates(self) -> int:
        """Counter + lpage updates whose effect was freed right after."""
        return sum(self.wasted_counts.values())
