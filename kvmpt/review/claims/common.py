"""What every claim's experiment shares: the slot layout, the shadowed pages, a snapshot of
who believes what, and the guest's page-table writes.

The notebook writes each experiment out in the public API (``VM``, ``attach_kvmgt``,
``shadow_many``, ``fail_next_prepare``, ``set_user_memory_region``, ``guest_write_batch``)
and uses these helpers for the parts that are bookkeeping, not the experiment: which pages
are shadowed (:func:`pick_pages`), where the guest writes (:func:`page_table_writes`), and
what KVM, KVMGT and GVT each believe (:func:`snapshot`).  The package's own copies of the
experiments (``failed_move`` ...) use the same helpers, so both draw the same random pages.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvmpt.constants import GIB, PAGE_SHIFT, USERSPACE_ADDR, WRITE_OUTCOMES
from kvmpt.infra.paths import DATA_DIR

__all__ = ["TRACE_DIR", "Snapshot", "snapshot", "write_stream", "pick_pages",
           "page_table_writes", "slot_ua", "set_region", "shadowed_slot"]

TRACE_DIR = DATA_DIR / "traces"


def new_vm(design, max_gfn=None):
    """``kvmpt.kernel.vm.VM`` of ``design`` (the model itself, without ``vm.replay``)."""
    from kvmpt.kernel.vm import VM
    return VM(design=design) if max_gfn is None else VM(design=design, max_gfn=max_gfn)


def slot_ua(slot: int) -> int:
    """The host address QEMU would back slot ``slot`` with: one TiB apart per slot."""
    return USERSPACE_ADDR + (slot << 40)


def set_region(vm, slot: int, gpa: int, size: int, flags: int = 0,
               ua: int | None = None) -> int:
    """``KVM_SET_USER_MEMORY_REGION`` of ``slot``: 0, or the errno it failed with."""
    try:
        vm.set_user_memory_region(slot, flags, gpa, size, slot_ua(slot) if ua is None else ua)
    except OSError as exc:
        return exc.errno
    return 0


def pick_pages(rng: np.random.Generator, base_gfn: int, npages: int, tracked: int) -> np.ndarray:
    """``tracked`` distinct gfns of the slot ``[base_gfn, base_gfn + npages)``, ascending:
    the guest page-table pages GVT shadows."""
    t = min(tracked, npages)
    if not t:
        return np.array([], dtype=np.int64)
    return base_gfn + np.sort(rng.choice(npages, size=t, replace=False))


def page_table_writes(rng: np.random.Generator, gfns: np.ndarray, writes: int, *,
                      offsets: bool = True) -> np.ndarray:
    """``writes`` guest stores (gpas, uint64) spread uniformly over the page-table pages at
    ``gfns``; with ``offsets`` each lands on a random 8-byte entry of its page."""
    offs = rng.integers(0, 512, size=writes) * 8 if offsets else 0
    gpas = (gfns[rng.integers(0, len(gfns), size=writes)] << PAGE_SHIFT) + offs
    return np.asarray(gpas).astype(np.uint64)


def shadowed_slot(design, *, slot_gib: int = 1, tracked: int = 64, seed: int = 0):
    """The setup of sections 2 and 4: slot 0 (3 GiB of low RAM) and slot 1 (``slot_gib`` GiB
    at 4 GiB), KVMGT attached, GVT shadowing ``tracked`` pages of slot 1 (:func:`pick_pages`
    from ``seed``).  Returns ``(vm, gvt, rng, gfns)``; ``rng`` then draws the writes."""
    vm = new_vm(design)
    vm.set_user_memory_region(0, 0, 0, 3 * GIB, slot_ua(0))
    vm.set_user_memory_region(1, 0, 4 * GIB, slot_gib * GIB, slot_ua(1))
    gvt = vm.attach_kvmgt()
    rng = np.random.default_rng(seed)
    gfns = pick_pages(rng, 4 * GIB >> PAGE_SHIFT, slot_gib * GIB >> PAGE_SHIFT, tracked)
    gvt.shadow_many(gfns)
    return vm, gvt, rng, gfns


@dataclass(frozen=True)
class Snapshot:
    """What KVM, KVMGT and GVT each believe about the shadowed pages at one moment."""

    shadowed: int          # pages GVT shadows (its radix tree, tracked=true)
    ptable: int            # entries in KVMGT's ptable
    kvm_tracked: int       # shadowed pages whose gfn_write_track count is > 0
    stale: int             # shadowed pages whose guest writes would not reach GVT
    violations: int        # vm.check_invariants() lines

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def snapshot(vm, gvt) -> Snapshot:
    """:class:`Snapshot` of ``vm`` and its attached KVMGT ``gvt`` now."""
    shadowed = gvt.shadowed_gfns()
    kvm = 0
    for g in shadowed:
        try:
            kvm += vm.write_track_count(g) > 0
        except LookupError:
            pass
    return Snapshot(len(shadowed), len(gvt.ptable), kvm, len(gvt.stale_gfns()),
                    len(vm.check_invariants()))


def write_stream(vm, gpas: np.ndarray) -> dict[str, int]:
    """Guest writes at ``gpas`` (``vm.guest_write_batch``): the counts by outcome
    (``kvmpt.constants.WRITE_OUTCOMES``) and ``missed``, as the model booked them."""
    got = vm.guest_write_batch(np.asarray(gpas, dtype=np.uint64))
    return {k: int(got[k]) for k in (*WRITE_OUTCOMES, "missed")}
