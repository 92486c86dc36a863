"""Named scenarios: which threads run against which initial ptables and memslots."""
from __future__ import annotations

from dataclasses import dataclass

from kvmpt.race.state import GFN, NEIGHBOUR
from kvmpt.race.threads import Programs


@dataclass(frozen=True)
class Scenario:
    """Named threads plus each vGPU's initial ptable (gfns in ``hash_add`` order) and each
    VM's memslots.  ``vgpus`` > 1 makes every per-VM/per-vGPU lock an instance."""

    name: str
    doc: str
    build: object               # (Programs) -> [(thread name, items), ...]
    ptable: tuple = (GFN,)      # vGPU 0's table
    slots: int = 1
    slot_of: tuple = ()         # (gfn, memslot) pairs; gfns not listed are in slot 0
    vgpus: int = 1
    other_ptable: tuple = ()    # vGPU 1's table (two-vGPU scenarios)
    finding: str = ""           # a finding beyond the review thread: what it shows

    @property
    def ptables(self) -> dict:
        return {0: self.ptable, **({1: self.other_ptable} if self.vgpus > 1 else {})}


def _write_vs_unshadow(g: Programs):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("gvt", g.gtt_unshadow(GFN))]


def _write_vs_remove_region(g: Programs):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)),
            ("memslot", g.memslot_delete(slot=1, gfns=[NEIGHBOUR]))]


def _write_same_slot_vs_remove_region(g: Programs):
    return [("vcpu0", g.vcpu_write(NEIGHBOUR, slot=1)),
            ("memslot", g.memslot_delete(slot=1, gfns=[NEIGHBOUR]))]


def _write_vs_detach(g: Programs):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("close", g.detach())]


def _two_vcpus(g: Programs):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("vcpu1", g.vcpu_write(NEIGHBOUR, slot=0))]


def _two_vcpus_vs_unshadow(g: Programs):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("vcpu1", g.vcpu_write(NEIGHBOUR, slot=0)),
            ("gvt", g.gtt_unshadow(GFN))]


def _write_vs_unshadow_vs_remove_region(g: Programs):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("gvt", g.gtt_unshadow(NEIGHBOUR)),
            ("memslot", g.memslot_delete(slot=1, gfns=[NEIGHBOUR]))]


def _two_vgpus_write_vs_unshadow(g: Programs):
    return [("vm0.vcpu0", g.vcpu_write(GFN, slot=0, v=0)), ("gvt1", g.gtt_unshadow(GFN, v=1))]


def _two_vgpus_reclaim(g: Programs):
    return [("vm1.vcpu0", g.vcpu_write(GFN, slot=0, v=1)),
            ("gvt0", g.reclaim(GFN, v=0, victim=1))]


SCENARIOS = {s.name: s for s in (
    Scenario("write_vs_unshadow",
             "a vCPU's trapped write to a shadowed page table vs GVT unshadowing that page "
             "(intel_vgpu_unregister_page_track -> intel_gvt_page_track_remove)",
             _write_vs_unshadow),
    Scenario("write_vs_remove_region",
             "a vCPU write to gfn 0x1000 (slot 0) vs KVM_SET_USER_MEMORY_REGION deleting slot 1, "
             "whose shadowed gfn 0x2000 shares the ptable bucket (KVMGT's slot hook frees it)",
             _write_vs_remove_region, ptable=(GFN, NEIGHBOUR), slots=2,
             slot_of=((NEIGHBOUR, 1),)),
    Scenario("write_same_slot_vs_remove_region",
             "a vCPU write into the slot being deleted: kvm->srcu makes it safe even unlocked",
             _write_same_slot_vs_remove_region, ptable=(GFN, NEIGHBOUR), slots=2,
             slot_of=((NEIGHBOUR, 1),)),
    Scenario("write_vs_detach",
             "a vCPU write vs closing the vGPU (unregister notifier, synchronize_srcu, "
             "kvmgt_protect_table_destroy)", _write_vs_detach),
    Scenario("two_vcpus",
             "two vCPUs writing two shadowed page tables in one ptable bucket; either handler "
             "may re-enter add/remove", _two_vcpus, ptable=(NEIGHBOUR, GFN)),
    Scenario("two_vcpus_vs_unshadow",
             "three threads: both vCPUs write while GVT unshadows the first one's page",
             _two_vcpus_vs_unshadow, ptable=(NEIGHBOUR, GFN)),
    Scenario("write_vs_unshadow_vs_remove_region",
             "three threads: a vCPU write to 0x1000, GVT unshadowing 0x2000 and the DELETE of "
             "0x2000's slot (remove_region takes vgpu_lock under slots_lock)",
             _write_vs_unshadow_vs_remove_region, ptable=(GFN, NEIGHBOUR), slots=2,
             slot_of=((NEIGHBOUR, 1),)),
    Scenario("two_vgpus_write_vs_unshadow",
             "two vGPUs in two VMs: VM 0's vCPU writes a page vGPU 0 shadows while GVT "
             "unshadows the same gfn of vGPU 1 -- per-vGPU tables and locks, so nothing is "
             "shared (the control for the reclaim scenario)",
             _two_vgpus_write_vs_unshadow, vgpus=2, other_ptable=(GFN,)),
    Scenario("two_vgpus_reclaim",
             "two vGPUs: vGPU 0's shadow-page allocation fails, reclaim_one_ppgtt_mm() "
             "invalidates vGPU 1's unpinned PPGTT down to intel_gvt_page_track_remove(vgpu1) "
             "holding only vGPU 0's vgpu_lock, while VM 1's vCPU writes a page vGPU 1 shadows",
             _two_vgpus_reclaim, vgpus=2, other_ptable=(GFN,), ptable=(),
             finding="v6.6 gtt.c reclaim_one_ppgtt_mm() frees another vGPU's ptable entries "
                     "without that vGPU's vgpu_lock"),
)}
DEFAULT_SCENARIO = "write_vs_unshadow"

#: the scenarios of the 2022-2023 review thread (one vGPU); the rest go beyond it
THREAD_SCENARIOS = tuple(n for n, s in SCENARIOS.items() if s.vgpus == 1)


def scenarios() -> dict[str, str]:
    """Scenario name -> one-line description."""
    return {n: s.doc for n, s in SCENARIOS.items()}
