"""Whole threads: a vCPU's trapped write, GVT unshadowing, a memslot DELETE, detach, and the
shadow-page reclaim that reaches another vGPU (``reclaim_one_ppgtt_mm``)."""
from __future__ import annotations

from kvmpt.kernel.lockdep import CACHE_LOCK, MMU_LOCK, PPGTT_MM_LOCK, SLOTS_LOCK, VGPU_LOCK
from kvmpt.race.objects import (HashDestroy, NotifierDel, NotifierWalk, Probe, RadixDelete,
                      RadixInsert, RadixLookup, ReadNode, SlotSet, SlotUsable, WriteTrack,
                      FindLocked)
from kvmpt.race.programs import (GTT, GVT_PT, KVM_MAIN, KVMGT, MMIO, PT, X86, Gen, Label)
from kvmpt.race.state import CHILD, KVM_SRCU, TRACK_SRCU
from kvmpt.race.steps import (Choose, Goto, IfNot, Lock, Note, SrcuReadLock, SrcuReadUnlock,
                    SyncSrcuStart, SyncSrcuWait, Unlock)

#: gtt.c as read for the reclaim path: torvalds/linux drivers/gpu/drm/i915/gvt/gtt.c at
#: f1864235dda9 (post-series: it has the series' "Error out on an attempt to shadowing an
#: unknown GTT entry type" and the dma_map-based 2M check), i.e. the v6.6 code.
GTT_COMMIT = "f1864235dda9"


class Programs(Gen):
    # -- the write path ----------------------------------------------------------------
    def page_track_handler(self, gfn: int, v: int = 0) -> list:
        """``intel_vgpu_page_track_handler`` (drivers/gpu/drm/i915/gvt/page_track.c).

        v6.5 took ``vgpu_lock`` itself, first thing (also under the mmu_lock idea); from
        v1 08/27 "Hoist acquisition of vgpu_lock out to kvmgt_page_track_write()"
        (<20221223005739.1295925-9-seanjc@google.com>, kept in v6.6) its caller holds it.
        It looks the gfn up in ``page_track_tree`` (-ENXIO if gone), then takes one of
        three paths the model cannot predict:

        * ``page_track->handler`` = ``ppgtt_write_protection_handler`` (gtt.c) updating an
          entry: ``ppgtt_invalidate_pte`` -> ``intel_gvt_dma_unmap_guest_page`` (kvmgt.c)
          -> ``mutex_lock(&vgpu->cache_lock)`` -- it sleeps;
        * the same handler meeting a new page-table page:
          ``ppgtt_populate_spt_by_guest_entry`` -> ``intel_vgpu_register_page_track``
          (``GFP_KERNEL``) + ``intel_vgpu_enable_page_track`` -> ``intel_gvt_page_track_add``
          -- it re-enters add;
        * ``vgpu->failsafe``: ``intel_gvt_page_track_remove(vgpu, gfn)`` -- it re-enters
          remove (<Y7STZZkd3EaRXLTC@google.com>)."""
        at = self.at(f"{GVT_PT}:intel_vgpu_page_track_handler")
        own_lock = self.lock in ("none", "mmu_lock")
        vgpu = self.lk(VGPU_LOCK, v)
        out, b_pte, b_new, b_fs = (self.label("h_out"), self.label("h_pte"),
                                   self.label("h_new"), self.label("h_fs"))
        dma = self.kat(f"{KVMGT}:intel_gvt_dma_unmap_guest_page")
        cname = self.ref(self.lk(CACHE_LOCK, v), "vgpu->cache_lock")
        vname = self.ref(vgpu, "vgpu->vgpu_lock")
        prog = [Lock(f"mutex_lock(&{vname})", at, lock=vgpu)] if own_lock else []
        prog += [
            RadixLookup(f"intel_vgpu_find_page_track({gfn:#x})",
                        self.kat(f"{GVT_PT}:intel_vgpu_find_page_track"), gfn=gfn, v=v),
            IfNot("", at, var="tracked", label=out),
            Choose("handler", at, branches=(
                (b_pte, "ppgtt_write_protection_handler updates an entry"),
                (b_new, "ppgtt_write_protection_handler shadows a new page table"),
                (b_fs, "vgpu->failsafe → intel_gvt_page_track_remove"))),
            Label(b_pte),
            *self.frame("intel_gvt_dma_unmap_guest_page", [
                Lock(f"mutex_lock(&{cname})", dma, lock=self.lk(CACHE_LOCK, v)),
                Unlock(f"mutex_unlock(&{cname})", dma, lock=self.lk(CACHE_LOCK, v))]),
            Goto("", at, label=out),
            Label(b_new),
            *self.frame("ppgtt_populate_spt_by_guest_entry", [
                RadixInsert(f"intel_vgpu_register_page_track({CHILD:#x}): kzalloc(GFP_KERNEL)",
                            self.kat(f"{GVT_PT}:intel_vgpu_register_page_track"), gfn=CHILD,
                            v=v),
                *self.page_track_add(CHILD, v)]),
            Goto("", at, label=out),
            Label(b_fs),
            *self.page_track_remove(gfn, v),
            Label(out),
        ]
        if own_lock:
            prog.append(Unlock(f"mutex_unlock(&{vname})", at, lock=vgpu))
        return self.frame("intel_vgpu_page_track_handler", prog)

    def kvmgt_track_write(self, gfn: int, v: int = 0) -> list:
        """``kvmgt_page_track_write`` (drivers/gpu/drm/i915/gvt/kvmgt.c).

        v6.5: ``if (kvmgt_gfn_is_write_protected(info, gfn)) intel_vgpu_page_track_handler()``
        with no lock.  mmu_lock idea: the same inside ``read_lock(&kvm->mmu_lock)``.  Read, not
        write, on purpose: in v6.5 every writer of ``ptable`` -- ``intel_gvt_page_track_add``,
        ``intel_gvt_page_track_remove`` and ``kvmgt_page_track_flush_slot`` (kvmgt.c) --
        changes it under ``write_lock(&kvm->mmu_lock)``, so a reader excludes them all with
        ``read_lock``; and since every rwlock mode spins, the sleeping handler is still
        sleep-in-atomic.  v1 09/27: ``mutex_lock(&info->vgpu_lock)`` (hoisted by the patch
        before it) then ``mutex_lock(&info->gfn_lock)``, around lookup and handler.  v6.6:
        ``mutex_lock(&info->vgpu_lock)`` around lookup and handler."""
        at = self.at(f"{KVMGT}:kvmgt_page_track_write")
        find_at = self.at(f"{KVMGT}:__kvmgt_protect_table_find")
        miss = self.label("w_miss")
        lookup = [
            *self.frame("__kvmgt_protect_table_find", [
                Probe("hash_for_each_possible(ptable, p, hnode, gfn)", find_at, gfn=gfn, v=v,
                      label=miss),
                ReadNode("read p->gfn", find_at, gfn=gfn, v=v, label=miss)]),
            IfNot("", at, label=miss),
            *self.page_track_handler(gfn, v),
            Label(miss),
        ]
        vgpu, tl, mmu = self.lk(VGPU_LOCK, v), self.table_lock(v), self.lk(MMU_LOCK, v)
        vn, tn = self.ref(vgpu, "info->vgpu_lock"), self.ref(tl, "info->gfn_lock")
        mn = self.ref(mmu, "kvm->mmu_lock")
        if self.lock == "none":
            body = lookup
        elif self.lock == "mmu_lock":
            body = [Lock(f"read_lock(&{mn})", at, lock=mmu, mode="read"), *lookup,
                    Unlock(f"read_unlock(&{mn})", at, lock=mmu)]
        elif self.lock == "gfn_lock":
            body = [Lock(f"mutex_lock(&{vn})", at, lock=vgpu),
                    Lock(f"mutex_lock(&{tn})", at, lock=tl),
                    self.assert_table_lock(v), *lookup,
                    Unlock(f"mutex_unlock(&{tn})", at, lock=tl),
                    Unlock(f"mutex_unlock(&{vn})", at, lock=vgpu)]
        else:
            body = [Lock(f"mutex_lock(&{vn})", at, lock=vgpu),
                    self.assert_table_lock(v), *lookup,
                    Unlock(f"mutex_unlock(&{vn})", at, lock=vgpu)]
        return self.frame("kvmgt_page_track_write", body)

    def vcpu_write(self, gfn: int, slot: int, v: int = 0) -> list:
        """A vCPU's emulated write to a shadowed page: ``vcpu_run`` holds ``kvm->srcu``
        (arch/x86/kvm/x86.c); ``emulator_write_phys`` writes guest memory and, only if that
        worked, calls ``kvm_page_track_write`` (page_track.c, v6.5; ``__kvm_page_track_write``
        in v6.6), which walks the notifier list inside ``srcu_read_lock(&head->track_srcu)``
        and calls KVMGT's ``track_write``."""
        fn = "kvm_page_track_write" if self.lock != "vgpu_lock" else "__kvm_page_track_write"
        pt = self.kat(f"{PT}:{fn}")
        run = self.kat(f"{X86}:vcpu_run")
        done, unl = self.label("v_done"), self.label("v_unl")
        return self.frame("vcpu_run", [
            SrcuReadLock("srcu_read_lock(&kvm->srcu)", run, domain=KVM_SRCU, vm=v),
            SlotUsable(f"emulator_write_phys({gfn:#x})", self.kat(f"{X86}:emulator_write_phys"),
                       slot=slot, vm=v, label=done),
            *self.frame(fn, [
                SrcuReadLock("srcu_read_lock(&head->track_srcu)", pt, domain=TRACK_SRCU, vm=v),
                NotifierWalk("hlist_for_each_entry_srcu", pt, v=v, label=unl),
                *self.kvmgt_track_write(gfn, v),
                Label(unl),
                SrcuReadUnlock("srcu_read_unlock(&head->track_srcu)", pt, domain=TRACK_SRCU,
                               vm=v)]),
            Label(done),
            SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", run, domain=KVM_SRCU, vm=v),
        ])

    # -- the removers --------------------------------------------------------------------
    def unregister(self, gfn: int, v: int) -> list:
        """``ppgtt_free_spt`` (gtt.c) -> ``intel_vgpu_unregister_page_track``
        (gvt/page_track.c): ``radix_tree_delete`` and, if it was tracked,
        ``intel_gvt_page_track_remove``."""
        un = self.kat(f"{GVT_PT}:intel_vgpu_unregister_page_track")
        skip = self.label("u_skip")
        return self.frame("ppgtt_free_spt", self.frame("intel_vgpu_unregister_page_track", [
            RadixDelete(f"radix_tree_delete({gfn:#x}) + kfree(track)", un, gfn=gfn, v=v),
            IfNot("", un, var="tracked", label=skip),
            *self.page_track_remove(gfn, v),
            Label(skip)]))

    def gtt_unshadow(self, gfn: int, v: int = 0) -> list:
        """GVT stops shadowing a guest page table: a guest MMIO write (PPGTT destroy
        notification) is emulated under ``mutex_lock(&vgpu->vgpu_lock)``
        (``intel_vgpu_emulate_mmio_write``, gvt/mmio.c) and reaches ``ppgtt_free_spt``."""
        mmio = self.kat(f"{MMIO}:intel_vgpu_emulate_mmio_write")
        vgpu = self.lk(VGPU_LOCK, v)
        vn = self.ref(vgpu, "vgpu->vgpu_lock")
        return self.frame("intel_vgpu_emulate_mmio_write", [
            Lock(f"mutex_lock(&{vn})", mmio, lock=vgpu),
            *self.unregister(gfn, v),
            Unlock(f"mutex_unlock(&{vn})", mmio, lock=vgpu),
        ])

    def reclaim(self, victim_gfn: int, v: int = 0, victim: int = 1) -> list:
        """vGPU ``v`` runs out of memory while shadowing and reclaims vGPU ``victim``'s PPGTT.

        A guest MMIO write on vGPU ``v`` (a g2v PPGTT-create notification:
        ``intel_vgpu_emulate_mmio_write`` takes ``v``'s ``vgpu_lock``, handlers.c
        ``handle_g2v_notification`` -> ``intel_vgpu_g2v_create_ppgtt_mm``) shadows a page
        table: gtt.c ``shadow_ppgtt_mm`` -> ``ppgtt_populate_spt_by_guest_entry`` ->
        ``ppgtt_alloc_spt_gfn`` -> ``ppgtt_alloc_spt``, where ``alloc_spt(GFP_KERNEL)`` fails
        (precondition: allocation failure) and ``reclaim_one_ppgtt_mm(gvt)`` runs.  It takes
        ``gvt->gtt.ppgtt_mm_lock``, picks the first *unpinned* mm on the GVT-wide LRU --
        nothing restricts it to ``v``'s own -- does ``list_del_init`` and **drops the lock**
        before ``invalidate_ppgtt_mm(mm)``, which walks the victim's shadow tree
        (``ppgtt_invalidate_spt_by_shadow_entry`` -> ``ppgtt_invalidate_spt``, with
        ``intel_gvt_dma_unmap_guest_page`` taking the victim's ``cache_lock``) down to
        ``ppgtt_free_spt`` -> ``intel_vgpu_unregister_page_track(victim, gfn)``.  The only
        locks held there are ``v``'s ``vgpu_lock`` and, inside, the victim's ``cache_lock``
        and KVM's locks of the victim's VM: not the victim's ``vgpu_lock``, which v6.6 uses to
        guard its ``ptable`` (gtt.c at :data:`GTT_COMMIT`)."""
        mmio = self.kat(f"{MMIO}:intel_vgpu_emulate_mmio_write")
        gtt = self.kat(f"{GTT}:reclaim_one_ppgtt_mm")
        alloc = self.kat(f"{GTT}:ppgtt_alloc_spt")
        inv = self.kat(f"{GTT}:ppgtt_invalidate_pte")
        own = self.lk(VGPU_LOCK, v)
        lru = PPGTT_MM_LOCK
        cache = self.lk(CACHE_LOCK, victim)
        reclaim = self.frame("reclaim_one_ppgtt_mm", [
            Lock("mutex_lock(&gvt->gtt.ppgtt_mm_lock)", gtt, lock=lru),
            Note(f"LRU: vGPU{victim}'s mm, pincount 0: list_del_init", gtt),
            Unlock("mutex_unlock(&gvt->gtt.ppgtt_mm_lock)", gtt, lock=lru),
            *self.frame("invalidate_ppgtt_mm", self.frame("ppgtt_invalidate_spt", [
                *self.frame("intel_gvt_dma_unmap_guest_page", [
                    Lock(f"mutex_lock(&vgpu{victim}->cache_lock)", inv, lock=cache),
                    Unlock(f"mutex_unlock(&vgpu{victim}->cache_lock)", inv, lock=cache)]),
                *self.unregister(victim_gfn, victim)])),
        ])
        return self.frame("intel_vgpu_emulate_mmio_write", [
            Lock(f"mutex_lock(&vgpu{v}->vgpu_lock)", mmio, lock=own),
            *self.frame("shadow_ppgtt_mm", self.frame("ppgtt_alloc_spt", [
                Note("alloc_spt(GFP_KERNEL) → NULL (allocation failure)", alloc),
                *reclaim])),
            Unlock(f"mutex_unlock(&vgpu{v}->vgpu_lock)", mmio, lock=own),
        ])

    def slot_hook_body(self, gfns: list) -> list:
        """KVMGT's slot hook over the deleted slot's gfns.

        ``flush``: ``kvmgt_page_track_flush_slot`` (kvmgt.c, v6.5): ``write_lock(mmu_lock)``
        across the loop; per protected gfn ``kvm_slot_page_track_remove_page`` +
        ``kvmgt_protect_table_del``.  Under vgpu_lock (v4 11/29) the loop is in
        ``vgpu_lock`` with mmu_lock per gfn; v1 09/27 did the same with gfn_lock.
        ``remove``: ``kvmgt_page_track_remove_region`` (kvmgt.c, v6.6): the loop in
        ``mutex_lock(&info->vgpu_lock)``, per protected gfn only ``kvmgt_protect_table_del``
        (v1 took gfn_lock; under "none"/"mmu_lock", a combination no kernel had, the
        table's lock, mmu_lock)."""
        fn = ("kvmgt_page_track_flush_slot" if self.slot_hook == "flush"
              else "kvmgt_page_track_remove_region")
        at = self.at(f"{KVMGT}:{fn}", "v6.5" if self.slot_hook == "flush" and
                     self.lock in ("none", "mmu_lock") else None)
        outer = {"none": MMU_LOCK, "mmu_lock": MMU_LOCK}.get(self.lock) or self.table_lock(0)
        verb = {"kvm->mmu_lock": "write_lock(&kvm->mmu_lock)",
                "vgpu->gfn_lock": "mutex_lock(&info->gfn_lock)",
                "vgpu->vgpu_lock": "mutex_lock(&info->vgpu_lock)"}[outer.cls.name]
        unverb = verb.replace("mutex_lock", "mutex_unlock").replace("write_lock", "write_unlock")
        prog = [Lock(verb, at, lock=outer, mode="write")]
        if outer is not MMU_LOCK:
            prog.append(self.assert_table_lock(0))
        rm = self.at(f"{PT}:kvm_slot_page_track_remove_page", "v6.5")
        for g in gfns:
            skip = self.label("s_skip")
            prog += [FindLocked(f"kvmgt_gfn_is_write_protected({g:#x})", at, gfn=g),
                     IfNot("", at, label=skip)]
            if self.slot_hook == "flush":
                track = WriteTrack(f"kvm_slot_page_track_remove_page({g:#x})", rm)
                prog += ([track] if outer is MMU_LOCK else
                         [Lock("write_lock(&kvm->mmu_lock)", at, lock=MMU_LOCK), track,
                          Unlock("write_unlock(&kvm->mmu_lock)", at, lock=MMU_LOCK)])
            prog += [*self.table_del(g, 0), Label(skip)]
        prog.append(Unlock(unverb, at, lock=outer))
        return self.frame(fn, prog)

    def memslot_delete(self, slot: int, gfns: list) -> list:
        """``KVM_SET_USER_MEMORY_REGION`` deleting ``slot`` (virt/kvm/kvm_main.c:
        ``kvm_set_memory_region`` -> ``kvm_set_memslot``, spec section 3.2): under
        ``slots_lock``, S2 makes the slot INVALID and ``synchronize_srcu_expedited(&kvm->srcu)``;
        S2c ``kvm_arch_flush_shadow_memslot`` fires the v6.5 flush hook; S5 deletes the slot
        and synchronizes again; S7 ``kvm_arch_commit_memory_region`` fires the v6.6
        ``track_remove_region`` hook (``kvm_page_track_delete_slot``); then the slot's
        metadata is freed.  Both hooks walk the notifier list under ``track_srcu``."""
        setm = self.kat(f"{KVM_MAIN}:kvm_set_memory_region")
        swap = self.kat(f"{KVM_MAIN}:kvm_swap_active_memslots")
        hook_fn = ("kvm_page_track_flush_slot" if self.slot_hook == "flush"
                   else "kvm_page_track_delete_slot")
        hook_at = self.at(f"{PT}:{hook_fn}", "v6.5" if self.slot_hook == "flush" else "v6.6")
        skip = self.label("m_skip")
        hook = self.frame(hook_fn, [
            SrcuReadLock("srcu_read_lock(&head->track_srcu)", hook_at, domain=TRACK_SRCU),
            NotifierWalk("hlist_for_each_entry_srcu", hook_at, label=skip),
            *self.slot_hook_body(gfns),
            Label(skip),
            SrcuReadUnlock("srcu_read_unlock(&head->track_srcu)", hook_at, domain=TRACK_SRCU),
        ])
        sync = [SyncSrcuStart("synchronize_srcu_expedited(&kvm->srcu)", swap, domain=KVM_SRCU),
                SyncSrcuWait("  … grace period over", swap, domain=KVM_SRCU)]
        prog = [Lock("mutex_lock(&kvm->slots_lock)", setm, lock=SLOTS_LOCK),
                SlotSet(f"S2 kvm_invalidate_memslot: slot {slot} INVALID", swap, slot=slot,
                        state="invalid"), *sync]
        if self.slot_hook == "flush":
            prog += hook
        prog += [SlotSet(f"S5 kvm_delete_memslot: slot {slot} gone", swap, slot=slot,
                         state="gone"), *sync]
        if self.slot_hook == "remove":
            prog += hook
        prog += [Note("kvm_free_memslot: gfn_write_track freed",
                      self.kat(f"{KVM_MAIN}:kvm_commit_memory_region")),
                 Unlock("mutex_unlock(&kvm->slots_lock)", setm, lock=SLOTS_LOCK)]
        return self.frame("kvm_set_memory_region", prog)

    def detach(self) -> list:
        """``intel_vgpu_close_device`` (kvmgt.c, v6.5 and v6.6): ``intel_gvt_release_vgpu``
        (gvt/vgpu.c: cleans workloads under ``vgpu_lock``; it does not tear down GTT shadows,
        spec section 4.1, so it touches no ptable entry here), then
        ``kvm_page_track_unregister_notifier`` (page_track.c: ``hlist_del_rcu`` under
        ``write_lock(mmu_lock)``, then ``synchronize_srcu(&head->track_srcu)``), then
        ``kvmgt_protect_table_destroy`` -- which frees every entry with no lock."""
        rel = self.kat("drivers/gpu/drm/i915/gvt/vgpu.c:intel_gvt_release_vgpu")
        unreg = self.kat(f"{PT}:kvm_page_track_unregister_notifier")
        return self.frame("intel_vgpu_close_device", [
            Lock("mutex_lock(&vgpu->vgpu_lock)", rel, lock=VGPU_LOCK),
            Unlock("mutex_unlock(&vgpu->vgpu_lock)", rel, lock=VGPU_LOCK),
            *self.frame("kvm_page_track_unregister_notifier", [
                Lock("write_lock(&kvm->mmu_lock)", unreg, lock=MMU_LOCK),
                NotifierDel("hlist_del_rcu(&n->node)", unreg),
                Unlock("write_unlock(&kvm->mmu_lock)", unreg, lock=MMU_LOCK),
                SyncSrcuStart("synchronize_srcu(&head->track_srcu)", unreg, domain=TRACK_SRCU),
                SyncSrcuWait("  … grace period over", unreg, domain=TRACK_SRCU)]),
            HashDestroy("kvmgt_protect_table_destroy: hash_del + kfree all",
                        self.kat(f"{KVMGT}:kvmgt_protect_table_destroy")),
        ])
