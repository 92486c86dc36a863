"""Thread programs: the kernel code of each lock design, step by step, with its call chain.

``VERSION``/``KERNEL`` say where each design's code comes from: functions a design changes
carry its label; code it leaves alone carries the kernel version it sits in.  Sources:
"mmu_lock" is the idea rejected in <Y26SI3uh8JV0vvO6@google.com>; "gfn_lock" is v1 patch
09/27, <20221223005739.1295925-10-seanjc@google.com>, as the rest of v1 left it (its 27/27,
<20221223005739.1295925-28-seanjc@google.com>, shows the final kvmgt_page_track_write).
"""
from __future__ import annotations

import dataclasses

from kvmpt.kernel.lockdep import GFN_LOCK, MMU_LOCK, SLOTS_LOCK, VGPU_LOCK, LockClass
from kvmpt.race.objects import FindLocked, HashAdd, HashDel, KFree, SlotLookup, WriteTrack
from kvmpt.constants import KVMGT_LOCKS, SLOT_HOOKS  # noqa: F401
from kvmpt.race.state import KVM_SRCU
from kvmpt.race.steps import (AssertHeld, Choose, Goto, If, IfNot, Lock, SrcuReadLock, SrcuReadUnlock,
                    Step, Unlock)

LOCKS = KVMGT_LOCKS          # the design knob's values (kvmpt.constants)
VERSION = {"none": "v6.5", "mmu_lock": "v6.5 + mmu_lock idea", "gfn_lock": "series v1",
           "vgpu_lock": "v6.6"}
KERNEL = {"none": "v6.5", "mmu_lock": "v6.5", "gfn_lock": "v6.5", "vgpu_lock": "v6.6"}

KVMGT = "drivers/gpu/drm/i915/gvt/kvmgt.c"
GVT_PT = "drivers/gpu/drm/i915/gvt/page_track.c"
GTT = "drivers/gpu/drm/i915/gvt/gtt.c"
PT = "arch/x86/kvm/mmu/page_track.c"
KVM_MAIN = "virt/kvm/kvm_main.c"
X86 = "arch/x86/kvm/x86.c"
MMIO = "drivers/gpu/drm/i915/gvt/mmio.c"

#: locks that live in a VM (``struct kvm``) rather than in a vGPU
_KVM_LOCKS = {MMU_LOCK, SLOTS_LOCK}


class Label:
    def __init__(self, name: str):
        self.name = name


def assemble(items) -> tuple:
    """Resolve ``Label`` markers into step indices (``label`` -> ``target``)."""
    pos, steps = {}, []
    for it in items:
        if isinstance(it, Label):
            if it.name in pos:
                raise ValueError(f"duplicate label {it.name}")
            pos[it.name] = len(steps)
        else:
            steps.append(it)
    out = []
    for s in steps:
        if isinstance(s, Choose):
            s = dataclasses.replace(s, targets=tuple(pos[lab] for lab, _ in s.branches))
        elif s.label is not None:
            s = dataclasses.replace(s, target=pos[s.label])
        out.append(s)
    return tuple(out)


class Gen:
    """Builds thread programs for one lock design; unique labels per inlined body.

    ``multi``: a two-vGPU scenario, where every per-VM and per-vGPU lock is an instance
    (``vgpu0->vgpu_lock``, ``kvm1->mmu_lock``); with one vGPU the lock is its class."""

    def __init__(self, lock: str, slot_hook: str, slot_of: dict | None = None,
                 multi: bool = False):
        self.lock, self.slot_hook = lock, slot_hook
        self.slot_of = slot_of or {}
        self.multi = multi
        self.v, self.kv = VERSION[lock], KERNEL[lock]
        self._n = 0

    def label(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def lk(self, cls: LockClass, v: int):
        if not self.multi:
            return cls
        return cls.of(f"{'kvm' if cls in _KVM_LOCKS else 'vgpu'}{v}")

    def ref(self, lock, default: str) -> str:
        """How a step names ``lock``: the kernel expression with one vGPU (``info->vgpu_lock``),
        the instance with two (``vgpu1->vgpu_lock``)."""
        return lock.name if self.multi else default

    def at(self, fn: str, version: str | None = None) -> str:
        """``file:function (version)`` for code the lock design changes."""
        return f"{fn} ({version or self.v})"

    def kat(self, fn: str) -> str:
        """``file:function (version)`` for code the lock design leaves alone."""
        return f"{fn} ({self.kv})"

    @staticmethod
    def frame(fn: str, items) -> list:
        """Mark ``items`` as running inside kernel function ``fn`` (the witness's nesting)."""
        return [dataclasses.replace(it, stack=(fn,) + it.stack) if isinstance(it, Step) else it
                for it in items]

    def table_lock(self, v: int):
        return self.lk(GFN_LOCK if self.lock == "gfn_lock" else VGPU_LOCK, v)

    def assert_table_lock(self, v: int) -> Step:
        """``lockdep_assert_held`` in ``__kvmgt_protect_table_find`` (kvmgt.c): on
        ``gfn_lock`` in v1 09/27, on ``vgpu_lock`` in v6.6 (v6.5 had none)."""
        lock = self.table_lock(v)
        held = lock.name if self.multi else f"info->{lock.cls.name.split('->')[1]}"
        return AssertHeld(f"lockdep_assert_held(&{held})",
                          self.at(f"{KVMGT}:__kvmgt_protect_table_find"), lock=lock)

    # -- KVM side ----------------------------------------------------------------------
    def lookup(self, gfn: int, at: str, label: str, v: int) -> Step:
        """``slot = gfn_to_memslot(kvm, gfn); if (!slot) ... -EINVAL``."""
        return SlotLookup(f"gfn_to_memslot({gfn:#x})", at, slot=self.slot_of.get(gfn, 0),
                          vm=v, label=label)

    def kvm_write_track(self, gfn: int, add: bool, fail: str, v: int) -> list:
        """``kvm_write_track_{add,remove}_gfn`` (arch/x86/kvm/mmu/page_track.c, v6.6):
        ``srcu_read_lock(&kvm->srcu)``; ``gfn_to_memslot`` (-EINVAL, jump to ``fail``, if
        the slot is gone); ``write_lock(&kvm->mmu_lock)``; the count change; unlock.  v1's
        callers did the same steps themselves around ``kvm_slot_page_track_*_page``."""
        fn = "kvm_write_track_add_gfn" if add else "kvm_write_track_remove_gfn"
        inner = "__kvm_write_track_add_gfn" if add else "__kvm_write_track_remove_gfn"
        at = self.at(f"{PT}:{fn}", "v6.6")
        ok, nf = self.label("kwt_ok"), self.label("kwt_nf")
        mmu = self.lk(MMU_LOCK, v)
        return self.frame(fn, [
            SrcuReadLock("srcu_read_lock(&kvm->srcu)", at, domain=KVM_SRCU, vm=v),
            self.lookup(gfn, at, nf, v),
            Lock("write_lock(&kvm->mmu_lock)", at, lock=mmu, mode="write"),
            WriteTrack(f"{inner}({gfn:#x}): count {'+' if add else '-'}1",
                       self.at(f"{PT}:{inner}", "v6.6"), lock=mmu),
            Unlock("write_unlock(&kvm->mmu_lock)", at, lock=mmu),
            SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU, vm=v),
            Goto("", at, label=ok),
            Label(nf),
            SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU, vm=v),
            Goto("", at, label=fail),
            Label(ok),
        ])

    def table_del(self, gfn: int, v: int) -> list:
        """``kvmgt_protect_table_del`` (kvmgt.c): find, ``hash_del`` (= ``hlist_del_init``),
        then ``kfree`` -- two stores a lockless walker can see apart."""
        at = self.kat(f"{KVMGT}:kvmgt_protect_table_del")
        gone = self.label("del_gone")
        return self.frame("kvmgt_protect_table_del", [
            HashDel(f"kvmgt_protect_table_del({gfn:#x}): hash_del(&p->hnode)", at, gfn=gfn,
                    v=v, label=gone),
            KFree(f"kvmgt_protect_table_del({gfn:#x}): kfree(p)", at),
            Label(gone),
        ])

    def _find(self, gfn: int, v: int) -> Step:
        return FindLocked(f"kvmgt_gfn_is_write_protected({gfn:#x})",
                          self.kat(f"{KVMGT}:kvmgt_gfn_is_write_protected"), gfn=gfn, v=v)

    # -- KVMGT add / remove ------------------------------------------------------------
    def page_track_remove(self, gfn: int, v: int = 0) -> list:
        """``intel_gvt_page_track_remove`` (drivers/gpu/drm/i915/gvt/kvmgt.c).

        v6.5 (and the mmu_lock idea): srcu + ``write_lock(mmu_lock)``, and under it the
        ptable check, ``kvm_slot_page_track_remove_page`` and ``kvmgt_protect_table_del``.
        v1 09/27 (gfn_lock): ``mutex_lock(&info->gfn_lock)``; the ptable check; srcu,
        ``write_lock(mmu_lock)`` only around ``kvm_slot_page_track_remove_page``; then
        ``kvmgt_protect_table_del``; unlock.  v6.6: the caller holds ``vgpu_lock``; ptable
        check (asserting it), ``kvm_write_track_remove_gfn``, ``kvmgt_protect_table_del``."""
        return self._page_track(gfn, v, add=False)

    def page_track_add(self, gfn: int, v: int = 0) -> list:
        """``intel_gvt_page_track_add`` (kvmgt.c): the mirror image of remove, ending in
        ``kvmgt_protect_table_add`` (``kzalloc(GFP_ATOMIC)`` + ``hash_add``)."""
        return self._page_track(gfn, v, add=True)

    def _page_track(self, gfn: int, v: int, add: bool) -> list:
        """The one body of ``intel_gvt_page_track_{add,remove}``: add skips a gfn already in
        ``ptable``, remove one that is not; the KVM count change and the table change are
        the only other differences."""
        fn = "intel_gvt_page_track_add" if add else "intel_gvt_page_track_remove"
        at = self.at(f"{KVMGT}:{fn}")
        skip = self.label("pt_skip")
        skip_if = (If if add else IfNot)("", at, label=skip)
        if add:
            change = [HashAdd(f"kvmgt_protect_table_add({gfn:#x}): kzalloc(GFP_ATOMIC) + "
                              f"hash_add", self.kat(f"{KVMGT}:kvmgt_protect_table_add"),
                              gfn=gfn, v=v)]
        else:
            change = self.table_del(gfn, v)
        if self.lock in ("none", "mmu_lock"):
            nf, mmu = self.label("pt_nf"), self.lk(MMU_LOCK, v)
            kvm_fn = f"kvm_slot_page_track_{'add' if add else 'remove'}_page"
            body = [
                SrcuReadLock("srcu_read_lock(&kvm->srcu)", at, domain=KVM_SRCU, vm=v),
                self.lookup(gfn, at, nf, v),
                Lock("write_lock(&kvm->mmu_lock)", at, lock=mmu, mode="write"),
                self._find(gfn, v), skip_if,
                WriteTrack(f"{kvm_fn}({gfn:#x})", self.at(f"{PT}:{kvm_fn}", "v6.5"), lock=mmu),
                *change,
                Label(skip),
                Unlock("write_unlock(&kvm->mmu_lock)", at, lock=mmu),
                Label(nf),
                SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU, vm=v),
            ]
        else:
            gfn_lock = self.lk(GFN_LOCK, v)
            own = self.lock == "gfn_lock"
            body = [
                *([Lock("mutex_lock(&info->gfn_lock)", at, lock=gfn_lock)] if own else []),
                self.assert_table_lock(v),
                self._find(gfn, v), skip_if,
                *self.kvm_write_track(gfn, add=add, fail=skip, v=v),
                *change,
                Label(skip),
                *([Unlock("mutex_unlock(&info->gfn_lock)", at, lock=gfn_lock)] if own else []),
            ]
        return self.frame(fn, body)
