"""kvmpt's own check: do KVM's counters, KVMGT's ``ptable`` and GVT's shadows agree?

Spec/kernel-semantics.md section 6.2, in a reviewer's words (not a kernel file).
"""
from __future__ import annotations

import numpy as np

from kvmpt.kernel.memslot import HUGE_LEVELS, KVM_MEM_READONLY, PAGE_SHIFT, initial_lpage_info, level_shift


class Invariants:
    """``check_invariants``, mixed into :class:`kvmpt.kernel.vm.VM`."""

    def check_invariants(self) -> list[str]:
        """Every disagreement between KVM's write-track counters, KVMGT's ``ptable``
        and GVT's shadowed pages, in a reviewer's words; [] when they agree.

        With TDP (EPT) and no nested guest KVM's own shadow MMU write-tracks
        nothing, so (spec section 6.2) for every gfn of every address-space-0
        slot ``gfn_write_track == (1 if gfn in ptable else 0)``; address space 1
        counters stay 0 (KVMGT adds through ``gfn_to_memslot()``, address space
        0); each ``disallow_lpage`` equals its initial value plus the write-track
        references inside that huge page; every ``ptable`` gfn is shadowed by GVT
        and has a memslot whose counter traps writes; every shadowed gfn that guest
        RAM backs (a writable address-space-0 slot) is in ``ptable``.  GVT's shadow
        follows the guest page, i.e. the host page (hva) it had when shadowed: after
        a MOVE that page shows up at another gfn, which nothing protects.  A shadowed
        gfn whose memory is gone is not a disagreement (the guest cannot write it;
        ``gvt.stale_gfns()`` still lists it), but once RAM is created there again
        without protection it is.
        """
        out: list[str] = []
        gvt = self.kvmgt if self.kvmgt is not None and self.kvmgt.attached else None
        ptable = gvt.ptable.gfns() if gvt else set()
        for as_id, slots in enumerate(self._as):
            for s in slots.sorted():
                arr = s.arch.gfn_write_track
                nz = np.flatnonzero(arr)
                for i in nz:
                    gfn = s.base_gfn + int(i)
                    want = 1 if (as_id == 0 and gfn in ptable) else 0
                    if int(arr[i]) != want:
                        if want == 0 and gvt is None:
                            why = "no external tracker is attached (protection leaked)"
                        elif as_id == 1:
                            why = "KVMGT only tracks through address space 0"
                        else:
                            why = "KVMGT's ptable does not hold it"
                        out.append(f"gfn {gfn:#x} (as {as_id}, slot {s.id}): KVM write-track "
                                   f"count is {int(arr[i])}, expected {want}: {why}; guest "
                                   f"writes to it trap and are ignored")
                for level in HUGE_LEVELS:
                    expect = initial_lpage_info(s.base_gfn, s.npages, s.userspace_addr, level)
                    if nz.size:
                        idx = ((s.base_gfn + nz) >> level_shift(level)) - (s.base_gfn >> level_shift(level))
                        np.add.at(expect, idx, arr[nz].astype(np.int32))
                    bad = np.flatnonzero(s.arch.lpage_info[level - 2] != expect)
                    for j in bad[:8]:
                        out.append(f"slot {s.id} (as {as_id}) level {level} huge page {int(j)}: "
                                   f"disallow_lpage is {int(s.arch.lpage_info[level - 2][j])}, "
                                   f"expected {int(expect[j])} from alignment and write-track "
                                   f"counts")
        if gvt is not None:
            shadowed = {g for g, t in gvt.page_track_tree.items() if t}
            for gfn in sorted(ptable - shadowed):
                out.append(f"gfn {gfn:#x} is in KVMGT's ptable but GVT does not shadow it")
            for gfn in sorted(shadowed):
                hva = gvt.shadow_hva.get(gfn)
                seen_at = [s.base_gfn + ((hva - s.userspace_addr) >> PAGE_SHIFT)
                           for s in self._as[0].sorted()
                           if not s.flags & KVM_MEM_READONLY
                           and s.userspace_addr <= hva < s.userspace_addr + (s.npages << PAGE_SHIFT)]
                if gfn in seen_at:
                    # the page is still at its gfn (other gfns aliasing the same host
                    # page are a limit of gfn-based tracking, not of these designs)
                    if gfn not in ptable:
                        out.append(f"gfn {gfn:#x}: GVT shadows it and the guest can write it, "
                                   f"but KVMGT's ptable does not hold it; guest writes will not "
                                   f"reach the handler (stale shadow page table)")
                elif seen_at:
                    out.append(f"gfn {gfn:#x}: GVT shadows it, but the guest page behind it "
                               f"(hva {hva:#x}) is now at gfn {seen_at[0]:#x} (the slot moved); "
                               f"guest writes there are not trapped for GVT")
            for gfn in sorted(ptable):
                slot = self._as[0].find_gfn(gfn)
                if slot is None:
                    out.append(f"gfn {gfn:#x} is in KVMGT's ptable but no memslot holds it "
                               f"(the slot moved or was deleted): writes are not trapped")
                elif not slot.arch.gfn_write_track[gfn - slot.base_gfn]:
                    out.append(f"gfn {gfn:#x} is in KVMGT's ptable but KVM's write-track "
                               f"count is 0: guest writes go direct, GVT misses them")
        return out
