# %% [markdown]
# # KVM page-track hooks and KVMGT: the 2022 review, claim by claim
#
# **The question.** In November 2022 Yan Zhao reported that KVMGT (Intel GVT-g's KVM glue) could
# lose write protection on guest page tables when a memslot update failed, and proposed moving
# code in `kvm_main.c`. Sean Christopherson answered with a design instead of a reorder
# ([\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com), 2022-11-11), and that design is what Linux 6.6 merged. Was each
# of its claims right, and what does each alternative cost? This notebook runs the argument, in
# the thread's order, on the kvmpt model of both kernels. Every claim ends in a plot or a table.
#
# | kernel | kvmpt |
# |---|---|
# | `struct kvm_memory_slot` (`base_gfn`, `npages`, `flags`) | `vm.memslots(as_id)` |
# | `slot->arch.gfn_write_track[]` (u16 per 4 KiB gfn) | `vm.write_track_count(gfn)` |
# | KVMGT's `ptable` hash of `struct kvmgt_pgfn` | `gvt.ptable`, `gvt.is_write_protected(gfn)` |
# | GVT's `page_track_tree` (shadowed guest page tables) | `gvt.shadow(gfn)`, `gvt.shadowed_gfns()` |
# | `kvm->arch.track_notifier_head` | `vm.track_notifier_list` |
# | `kvm_set_memslot()` steps S1..S8 | `vm.events`, each `(step, {"S": ...})` |
# | `track_flush_slot` (v6.5, S2c) / `track_remove_region` (v6.6, S7) | `Design(slot_hook="flush" / "remove")` |
# | `kvm_arch_prepare_memory_region()` MOVE check | `Design(move="allow" / "reject")` |
# | the lock around `ptable` in `kvmgt_page_track_write()` | `Design(kvmgt_lock=...)` |
# | v6.5 `kvm_slot_page_track_remove_page()` in the slot hook | `Design(drop_protection_on_remove=True)` |
#
# A guest write to a page GVT shadows that does not reach GVT's handler is a **missed** write:
# GVT's shadow page table is then stale. That is the bug under review.
#
# Each claim's experiment is written out below in the public API (`VM`, `attach_kvmgt`,
# `shadow_many`, `fail_next_prepare`, `set_user_memory_region`, `guest_write_batch`,
# `race.explore`), so you can change it here and re-run; `kvmpt.review.claims` has the same
# experiments as functions (the tests, the text report and the dashboard call those) and the
# bulk work (cost curves, trace replays) behind one call each.
#
# Contents: 1. the update flow · 2. the flush hook fires too early · 3. dropping protection on
# DELETE is waste · 4. rejecting MOVE · 5. the unlocked lookup (5b two vGPUs, 5c SPIN) ·
# 6. summary (6b try your own design) · 7. explore (dashboard) · references.

# %% tags=["parameters"]
TRACKED = 64                    # guest page-table pages GVT shadows in the slot under test
WRITES = 2000                   # guest page-table writes after each update
SEED = 0
COST_SIZES_GIB = (1 / 16, 1, 16, 256, 1024)   # section 3: sizes of the deleted slot
COST_TRACKED = (64, 4096)       # section 3: shadowed pages in the deleted slot
TRACKED_AXIS = (16, 256, 4096, 65536)   # section 3: shadowed pages, second figure
TRACKED_AXIS_GIB = (1, 64)      # section 3: slot sizes of the second figure
EXACT_MAX_PAGES = 1 << 18       # walk gfn by gfn up to 1 GiB; larger slots are scaled
DASHBOARD = True                # section 7: build the live dashboard (needs a kernel)

# %%
import errno
import os

import numpy as np

from kvmpt import VM, Design, race
from kvmpt.constants import GIB, PAGE_SHIFT, USERSPACE_ADDR
from kvmpt.infra.text import table
from kvmpt.review import claims, results
from kvmpt.review.figures import (costs as cost_figs, dashboard as dashboard_figs,
                                  memslot as memslot_figs, race as race_figs)

REPORT = os.environ.get("KVMPT_REPORT") == "1"      # set by `kvmpt report`

# %% [markdown]
# ## 1. What page tracking and KVMGT are
#
# KVM write-tracks a gfn by keeping a per-slot counter (`gfn_write_track`) non-zero: the gfn's
# SPTEs are read-only, a guest store faults, is emulated, and `kvm_page_track_write()` calls
# each registered notifier's `track_write`. KVMGT is such a notifier. When GVT shadows a guest
# page-table page it adds the gfn to its `ptable` and asks KVM to track it; its `track_write`
# looks the gfn up in `ptable` and runs GVT's handler, which updates the shadow page table.
#
# First the picture: a q35/OVMF VM with SMM (so two address spaces) and a vGPU, booted from its
# layout in `data/layouts`, with GVT shadowing `TRACKED` page-table pages in guest RAM.

# %%
snapshot = claims.vm_snapshot("v6.6", "q35-ovmf-smm", tracked=TRACKED, seed=SEED)

# %% tags=["nbval-ignore-output"]
memslot_figs.vm_layout_figure(snapshot).show()

# %% [markdown]
# *What to look at:* the shadowed pages (red ticks) sit only in the RAM slots of address space
# 0, where KVMGT tracks them through `gfn_to_memslot()`; the notifier list holds KVMGT alone in
# v6.6 (in v6.5 KVM's own node follows it).
#
# Memslot updates go through `kvm_set_memslot()`: S2 makes an INVALID copy of the old slot
# active, S2c flushes shadow pages, S3 prepares (allocates metadata, **can fail**), S4 restores
# the old slot on failure, S5 installs, S7 commits (**cannot fail**) and frees the old metadata.
# Below: one VM with KVMGT attached runs each kind of update, including a MOVE whose prepare
# fails; the events are the model's `vm.events`.

# %%
flows = {name: claims.memslot_flow(name, tracked=4) for name in ("v6.5", "v6.6")}

# %%
# NBVAL_CHECK_OUTPUT
print(table(["design", "notifiers", "update", "errno", "stale"],
            [(name, "->".join(flow["notifiers"]), label, err, stale)
             for name, flow in flows.items() for label, err, stale in flow["ops"]]))

# %% tags=["nbval-ignore-output"]
memslot_figs.update_timelines(flows).show()

# %% [markdown]
# *What to look at:* in v6.5 the `flush_slot → kvmgt` marker sits in lane S2c, before S3 — also on
# the MOVE whose prepare then fails (red); in v6.6 KVMGT appears only at S7 (`remove_region`), after
# the point of no return, and only for the DELETE. Use the buttons to switch kernels.

# %% [markdown]
# ## 2. "The 'flush' hook is flawed"
#
# > The 'flush' hook is flawed as it's invoked before the memslot operation is guaranteed, i.e.
# > KVM might ultimately keep the existing memslot without notifying external page track users,
# > a.k.a. KVMGT.
# >
# > — Sean Christopherson, [\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com), 2022-11-11
#
# Yan's report ([\<20221108084416.11447-1-yan.y.zhao@intel.com\>](https://lore.kernel.org/r/20221108084416.11447-1-yan.y.zhao@intel.com)) showed the failed update
# "leaving previous write protection not recovered". Sean had called the bug "purely
# theoretical" ([\<Y2qSwlN26qWi3ZqH@google.com\>](https://lore.kernel.org/r/Y2qSwlN26qWi3ZqH@google.com)): DELETE cannot fail on x86, and a MOVE fails after
# S2c only on bad input or when allocating the new slot's metadata fails. Both are modelled: the
# new range ends above `kvm_mmu_max_gfn()` (-EINVAL), and `kvm_alloc_memslot_metadata()` fails
# (-ENOMEM, injected with `vm.fail_next_prepare`). A slot holding `TRACKED` shadowed page tables
# is MOVEd, the MOVE fails, the old slot comes back (S4), and the guest then writes its page
# tables `WRITES` times.
#
# The experiment, for one design and one cause (`claims.snapshot` records what GVT, KVMGT's
# `ptable` and KVM's counts each believe; `claims.pick_pages` / `claims.page_table_writes` draw
# the shadowed pages and the writes from the seed):

# %%
RAM_UA, SLOT1_UA = USERSPACE_ADDR, USERSPACE_ADDR + (1 << 40)   # QEMU's host mappings


def shadowed_slot(design):
    vm = VM(design=design)
    vm.set_user_memory_region(0, 0, 0, 3 * GIB, RAM_UA)             # slot 0: low RAM
    vm.set_user_memory_region(1, 0, 4 * GIB, GIB, SLOT1_UA)         # slot 1: 1 GiB at 4 GiB
    gvt = vm.attach_kvmgt()
    rng = np.random.default_rng(SEED)
    pages = claims.pick_pages(rng, 4 * GIB >> PAGE_SHIFT, GIB >> PAGE_SHIFT, TRACKED)
    gvt.shadow_many(pages)                            # GVT shadows TRACKED guest page tables
    return vm, gvt, rng, pages


def failed_move(design, cause):
    vm, gvt, rng, pages = shadowed_slot(design)
    before = claims.snapshot(vm, gvt)
    if cause == "enomem":
        vm.fail_next_prepare(errno.ENOMEM)            # kvm_alloc_memslot_metadata() fails
        target = 6 * GIB
    else:                                             # "max_gfn": ends past kvm_mmu_max_gfn()
        target = ((vm.max_gfn + 2) << PAGE_SHIFT) - GIB
    try:
        vm.set_user_memory_region(1, 0, target, GIB, SLOT1_UA)     # MOVE slot 1: fails at S3
        err = 0
    except OSError as e:
        err = e.errno
    after = claims.snapshot(vm, gvt)
    gpas = claims.page_table_writes(rng, pages, WRITES)   # WRITES stores to those page tables
    writes = {k: int(n) for k, n in vm.guest_write_batch(gpas).items()}
    return claims.FailedMove(design.name, cause, err, before, after, writes)


failed = {cause: {label: failed_move(d, cause) for label, d in claims.SECTION2_DESIGNS.items()}
          for cause in claims.CAUSES}

# %%
# NBVAL_CHECK_OUTPUT
print(table(["design", "cause", "errno", "ptable", "KVM", "stale", "missed"],
            [(label.split(":")[0], cause, r.errno, f"{r.before.ptable}->{r.after.ptable}",
              f"{r.before.kvm_tracked}->{r.after.kvm_tracked}", r.after.stale, r.missed)
             for cause, rs in failed.items() for label, r in rs.items()]))
same = all((r.errno, r.before, r.after, r.writes) == (p.errno, p.before, p.after, p.writes)
           for cause, rs in failed.items()
           for r, d in zip(rs.values(), claims.SECTION2_DESIGNS.values())
           for p in [claims.failed_move(d, cause, tracked=TRACKED, writes=WRITES, seed=SEED)])
print(f"the package's claims.failed_move gives the same results: {same}")

# %% tags=["nbval-ignore-output"]
memslot_figs.failed_move_figure(failed["max_gfn"]).show()
memslot_figs.failed_move_figure(failed["enomem"]).show()

# %% [markdown]
# *What to look at:* with the flush hook (first button) the failed MOVE leaves the slot where it
# was but KVMGT's `ptable` and KVM's counts empty, so every page-table write goes through
# untrapped and is missed. Moving the hook to commit (second button) is already enough: the
# failed MOVE changes nothing. The third button is v6.6, which also rejects the MOVE outright.

# %% [markdown]
# ## 3. "Dropping write protections ... is a waste of cycles"
#
# > Dropping write protections when a memslot is being deleted is a waste of cycles. The
# > memslot and thus gfn_track is literally being deleted immediately after invoking the hook
# > ... if we kill off the MOVE path, then KVMGT just needs to delete its hash table entry.
# >
# > — [\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com)
#
# One DELETE of a slot of each size, holding `COST_TRACKED` shadowed pages; the model counts
# each slot hook's primitive operations (`kvmpt.kernel.work`), `kvmpt.workload.costs` prices them. v6.5 walks
# every gfn of the slot under `mmu_lock` and drops protection on each hit; v6.6 still walks
# every gfn (under `vgpu_lock`) but only deletes hash entries. The dotted line is a **proposal
# that is in no kernel**: `remove_region` iterates `ptable` itself (its 2^18 bucket heads and
# its entries) and deletes the entries inside the range, so its cost does not grow with the slot.
#
# The experiment: one DELETE, and what KVMGT's slot hook did (`vm.hook_calls`: the hook, its
# primitive counts and its lock holds; `claims.hook_cost` sums them):

# %%
def delete_cost(design, npages, tracked):
    vm = VM(design=design)
    base = claims.DELETE_BASE_GFN                     # at 2 TiB: room for a 1 TiB slot
    vm.set_user_memory_region(1, 0, base << PAGE_SHIFT, npages << PAGE_SHIFT, SLOT1_UA)
    gvt = vm.attach_kvmgt()
    gvt.shadow_many(claims.pick_pages(np.random.default_rng(SEED), base, npages, tracked))
    c0 = len(vm.hook_calls)
    vm.set_user_memory_region(1, 0, base << PAGE_SHIFT, 0, SLOT1_UA)   # DELETE slot 1
    return claims.hook_cost(design, npages, min(tracked, npages), vm.hook_calls[c0:])


one_gib = {label: delete_cost(d, GIB >> PAGE_SHIFT, TRACKED)
           for label, d in claims.SECTION3_DESIGNS.items()}

# %%
# NBVAL_CHECK_OUTPUT
print(table([f"DELETE 1 GiB, {TRACKED} tracked", "lookups", "count+lpage", "wasted",
             "mmu_lock max"],
            [(label.split(":")[0], f"{c.probes:,}", f"{c.counter_updates + c.lpage_updates:,}",
              f"{c.wasted_updates:,}", f"{c.mmu_lock_max_hold:,} ops")
             for label, c in one_gib.items()]))
print("the package's claims.slot_hook_cost gives the same results:",
      all(c == claims.slot_hook_cost(d, GIB >> PAGE_SHIFT, TRACKED, SEED)
          for c, d in zip(one_gib.values(), claims.SECTION3_DESIGNS.values())))

# %% [markdown]
# The curves below are that DELETE at every size × shadowed count: `claims.cost_curve` runs
# `claims.slot_hook_cost` (the function above) up to `EXACT_MAX_PAGES` and scales the larger
# slots from the largest exact run (probes are the loop bound; the per-hit work does not
# change); `claims.price_rows` prices the counts with `kvmpt.workload.costs`.

# %%
sizes = [int(g * (1 << 18)) for g in COST_SIZES_GIB]
cost_rows = claims.price_rows(claims.cost_curve(claims.SECTION3_DESIGNS, sizes, COST_TRACKED,
                                                exact_max_pages=EXACT_MAX_PAGES, seed=SEED))

# %%
# NBVAL_CHECK_OUTPUT
big = [r for r in cost_rows if r["npages"] == max(sizes) and r["tracked"] == max(COST_TRACKED)]
print(table([f"DELETE 1 TiB, {max(COST_TRACKED):,} tracked", "lookups", "wasted", "hook",
             "mmu_lock max"],
            [(r["design"], f"{r['probes']:,}", f"{r['wasted_updates']:,}",
              claims.fmt_us(r["us"]), claims.fmt_us(r["hold_us"])) for r in big]))
# what the text below says: v6.5 holds mmu_lock for over a tenth of a second on a 1 TiB
# slot; only the ptable walk stays under a millisecond
v65_1tib = [r for r in cost_rows if r["npages"] == max(sizes) and r["design"].startswith("v6.5")]
assert all(r["hold_us"] > 100_000 for r in v65_1tib)
assert all(r["us"] < 1000 for r in big if r["design"] == claims.PROPOSAL)
# "its 2^18 bucket heads": KVMGT's DECLARE_HASHTABLE(ptable, 18), the proposal's fixed cost
from kvmpt.kernel.ptable import PTABLE_BITS
assert PTABLE_BITS == 18

# %% tags=["nbval-ignore-output"]
cost_figs.hook_cost_figure(cost_rows).show()

# %%
tracked_rows = claims.price_rows(claims.cost_curve(
    claims.SECTION3_DESIGNS, [g << 18 for g in TRACKED_AXIS_GIB], TRACKED_AXIS,
    exact_max_pages=EXACT_MAX_PAGES, seed=SEED))

# %% tags=["nbval-ignore-output"]
cost_figs.hook_cost_figure(tracked_rows, x="tracked").show()

# %% [markdown]
# *What to look at:* in the first figure the v6.5 line of "longest mmu_lock hold" grows with the
# slot — over a tenth of a second for a 1 TiB slot (the table above), which stalls every vCPU
# fault that needs the lock — and "wasted updates" / "wasted cycles" show the counter and lpage
# updates that went into arrays freed at S7. v6.6 removes both, but "hook time" shows it still pays O(npages)
# lookups, now under `vgpu_lock`; only the ptable walk (dotted) is flat in the slot size. The
# second figure holds the slot size and varies the shadowed pages: the waste grows with them, and
# the ptable walk costs more than v6.6's slot walk once the table is large and the slot small (its
# 2^18 bucket heads are a fixed cost). Open markers were scaled from a smaller exact run.

# %% [markdown]
# The same question over whole runs: the committed sweep `data/sweeps/small.parquet`
# (`kvmpt.run` runs; `data/sweeps/small.toml` has the grid) of the adversarial VMM, whose MOVEs
# make the slot hook walk a whole RAM slot.

# %%
from kvmpt.review.figures import sweep as sweep_figs
from kvmpt.sweep import load_table

sweep_table = load_table("small")
adversarial_hold = sweep_figs.aggregate(sweep_table.where(churn="adversarial").rows,
                                        "mmu_lock_max_hold_us", ["design", "ram_gib"], "max")

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(sweep_table)} runs, {len(sweep_table.failed())} failed")
print(table(["design (adversarial VMM)", "RAM", "longest mmu_lock hold"],
            [(d, f"{g:,} GiB", claims.fmt_us(v["value"]))
             for (d, g), v in adversarial_hold.items() if g in (min(sweep_table.column("ram_gib")),
                                                              max(sweep_table.column("ram_gib")))]))

# %% tags=["nbval-ignore-output"]
sweep_figs.heatmap(sweep_table, "mmu_lock_max_hold_us", x="ram_gib", y="tracked_gfns",
                   where={"churn": "adversarial"}).show()

# %% [markdown]
# *What to look at:* the longest `mmu_lock` hold of the run grows with the RAM slot and the
# shadowed pages under v6.5's flush hook (the table above: the longest hold of any run at each
# RAM size) and stays at the floor of KVM's own `kvm_mmu_zap_all_fast()` for every remove-hook
# design (use the buttons).

# %% [markdown]
# ## 4. "Actively prevent MOVE if there are external page trackers"
#
# > actively prevent MOVE if there are external page trackers, i.e. if KVMGT is attached
# >
# > — [\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com)
#
# Merged as "KVM: x86: Reject memslot MOVE operations if KVMGT is attached" (aa611a99adb4, with
# the inverted-check fix [\<ZPIwtfkVAyFWy41I@google.com\>](https://lore.kernel.org/r/ZPIwtfkVAyFWy41I@google.com)). First a MOVE that would succeed, with
# KVMGT attached: GVT shadows gfns, and after a MOVE the guest's page tables live at other gfns.

# %%
def move_with_kvmgt(design):
    vm, gvt, rng, pages = shadowed_slot(design)                     # as in section 2
    before = claims.snapshot(vm, gvt)
    try:
        vm.set_user_memory_region(1, 0, 8 * GIB, GIB, SLOT1_UA)    # MOVE slot 1 to 8 GiB
        err, delta = 0, (8 * GIB - 4 * GIB) >> PAGE_SHIFT   # same host pages, new gfns
    except OSError as e:
        err, delta = e.errno, 0
    after = claims.snapshot(vm, gvt)
    # the guest writes its page tables where they now are (gfn + delta)
    gpas = claims.page_table_writes(rng, pages + delta, WRITES, offsets=False)
    writes = {k: int(n) for k, n in vm.guest_write_batch(gpas).items()}
    writes["missed"] = WRITES - writes["handled"]   # every write targets a shadowed page
    return {"design": design.name, "errno": err, "before": before, "after": after,
            "writes": writes, "delta_gfns": delta, "violations": vm.check_invariants()[:3]}


moves = {label: move_with_kvmgt(d) for label, d in claims.SECTION2_DESIGNS.items()}

# %% [markdown]
# Then every committed QEMU trace (`data/traces`), replayed through both kernels with KVMGT
# shadowing `TRACKED` pages once RAM is laid out: `claims.qemu_move_census` counts each trace's
# updates by kind, the shadowed pages left stale and the WARNs (bulk work, one call).

# %%
census = claims.qemu_move_census(tracked=TRACKED, seed=SEED)

# %%
# NBVAL_CHECK_OUTPUT
print(table(["design", "errno", "stale", "missed"],
            [(label, r["errno"], r["after"].stale, r["writes"]["missed"])
             for label, r in moves.items()]))
print()
print(table(["QEMU trace", "design", "ops", "CREATE", "DELETE", "MOVE", "AS1 DEL", "stale",
             "WARN"],
            [(r["trace"].replace("_seabios_40g", ""), r["design"], r["ops"], r["create"],
              r["delete"], r["move"], r["as1_deletes"], "-" if r["stale"] is None
              else r["stale"], r["warns"]) for r in census]))
print("the package's claims.move_with_kvmgt gives the same results:",
      all(r == claims.move_with_kvmgt(d, tracked=TRACKED, writes=WRITES, seed=SEED)
          for r, d in zip(moves.values(), claims.SECTION2_DESIGNS.values())))

# %% tags=["nbval-ignore-output"]
memslot_figs.move_policy_figure(moves).show()
memslot_figs.qemu_census_figure(census).show()

# %% [markdown]
# *What to look at:* an allowed MOVE strands every shadowed page whichever hook is used (first two
# buttons); rejecting it (v6.6) keeps them all. The replayed QEMU boot traces (i440fx/SeaBIOS
# with and without SMM, and a 2020 VGA BAR toggle) issue CREATE and DELETE only, zero MOVEs, so
# rejecting MOVE costs QEMU nothing; the model's errnos match the traces' (`errno diff` is
# checked in `tests/`).
#
# **Not in the thread, found by the replay.** With SMM on, QEMU DELETEs slots of the SMM address
# space (AS1) while booting. Neither hook is told the address space — `track_flush_slot` gets the
# AS1 slot, `track_remove_region` only `(gfn, nr_pages)` — and KVMGT's `ptable` holds AS0 gfns,
# so such a DELETE purges KVMGT's entries for the same gfn range of guest RAM, whose AS0 slot
# stays: the `stale` column (`TRACKED` pages shadowed once the trace has laid out RAM) is
# non-zero in both kernels, and v6.5 also hits `WARN`s decrementing the AS1 slot's zero counts.
# In this trace the AS1 relayout of low RAM comes right after RAM is created, during firmware
# (PAM/SMRAM programming), before a guest i915 driver could shadow anything; it matters when such
# a relayout happens while GVT shadows pages (a reboot re-runs it). Rare — but neither design
# prevents it. A model finding, not discussed in the thread.

# %% [markdown]
# ## 5. "kvmgt_page_track_write() reads the hash table without mmu_lock"
#
# > Acquiring mmu_lock isn't an option as intel_vgpu_page_track_handler() might sleep, e.g. when
# > acquiring vgpu_lock.
# >
# > — [\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com)
#
# `kvmpt.race.explore` enumerates every interleaving of a vCPU's trapped write against GVT
# unshadowing the same page, under each lock design: none (v6.5), `mmu_lock` (the rejected
# idea), a dedicated `gfn_lock` (series v1, [\<20221223005739.1295925-1-seanjc@google.com\>](https://lore.kernel.org/r/20221223005739.1295925-1-seanjc@google.com)) and
# `vgpu_lock` (merged, 49a83e190b5b). Yan showed that `gfn_lock` deadlocks when the handler
# re-enters `intel_gvt_page_track_add()` ([\<Y6vOEjHZhOWulyo1@yzhao56-desk.sh.intel.com\>](https://lore.kernel.org/r/Y6vOEjHZhOWulyo1@yzhao56-desk.sh.intel.com)); Sean
# agreed: "Or even more simply, kvmgt_page_track_write() -> intel_vgpu_page_track_handler() ->
# intel_gvt_page_track_remove()" ([\<Y7STZZkd3EaRXLTC@google.com\>](https://lore.kernel.org/r/Y7STZZkd3EaRXLTC@google.com)).
#
# The experiment: two threads, a vCPU whose write to a shadowed page table traps into
# `kvmgt_page_track_write()` and GVT unshadowing that page; the explorer runs every
# interleaving of their kernel steps under each lock.

# %%
write_vs_unshadow = race.SCENARIOS["write_vs_unshadow"]
print(write_vs_unshadow.doc)
verdicts = {lock: race.explore(lock, write_vs_unshadow.name) for lock in race.LOCKS}

# %%
# NBVAL_CHECK_OUTPUT
print(table(["ptable lock", "verdict", "states", "failing states"],
            [(lk, r.verdict, f"{r.states:,}", f"{r.failing_states:,}")
             for lk, r in verdicts.items()]))

# %% tags=["nbval-ignore-output"]
race_figs.witness_swimlanes(verdicts).show()

# %% [markdown]
# *What to look at:* each button shows the shortest failing interleaving for that lock: a
# use-after-free of a freed `ptable` node (none), sleeping in `mutex_lock` under the spinning
# `mmu_lock` (mmu_lock), the handler re-taking `gfn_lock` (gfn_lock); `vgpu_lock` has none.
#
# The same four designs against every scenario the explorer knows (a write racing a memslot
# DELETE, detach, two vCPUs, three threads):

# %% tags=["nbval-ignore-output"]
race_figs.verdict_matrix(race.matrix()).show()

# %% [markdown]
# *What to look at:* among the thread's seven scenarios `vgpu_lock` is the only all-green
# column; `none` is safe only where SRCU already orders the threads (a write into the slot being
# deleted, detach). The last two rows have two vGPUs (below).
#
# Counts are **behaviours, not orderings**: a cell gives the distinct states the explorer reached
# and how many of them fail. The number of schedules (complete interleavings) is far larger
# because steps that commute are counted in every order; it says how hard the bug is to hit by
# testing, not how many different things can happen:

# %%
# NBVAL_CHECK_OUTPUT
crowded = race.explore("none", "two_vcpus_vs_unshadow")
print(table(["two_vcpus_vs_unshadow, none", "count"],
            [("distinct states", f"{crowded.states:,}"),
             ("failing states", f"{crowded.failing_states:,}"),
             *[(f"  of which {k}", f"{n:,}") for k, n in sorted(crowded.kinds.items())],
             ("schedules (orderings)", f"{crowded.schedules:.2e}")]))

# %% [markdown]
# The model steps at the kernel's store granularity where a lockless reader can see it:
# `kvmgt_protect_table_del()` is `hash_del()` — `hlist_del_init()`, which unlinks the node and
# sets its own `next` to NULL — then `kfree()`. So besides the use-after-free, v6.5's unlocked
# walk can stand on a node that was just unlinked, read `next == NULL` and stop early: a write to
# a page GVT still shadows is trapped and then ignored (**missed-write**, the `missed-write`
# failing states above). The shortest such interleaving, while a DELETE's flush hook removes a
# bucket neighbour:

# %%
# NBVAL_CHECK_OUTPUT
print(race.explore("none", "write_vs_remove_region", witness="missed-write").email())

# %% [markdown]
# ### 5b. Beyond the thread: two vGPUs and the shadow-page reclaim
#
# Locks are instances here, as in the kernel: each vGPU has its own `vgpu_lock`, `ptable` and
# `page_track_tree`, each VM its own `mmu_lock` and SRCU (KVMGT allows one vGPU per VM); lockdep's
# order graph stays per class. `two_vgpus_write_vs_unshadow` is the control: nothing is shared,
# so v6.5 is safe there. `two_vgpus_reclaim` follows v6.6 `gvt/gtt.c` (read at f1864235dda9):
# when `alloc_spt(GFP_KERNEL)` fails in `ppgtt_alloc_spt()`, `reclaim_one_ppgtt_mm(gvt)` takes
# `gvt->gtt.ppgtt_mm_lock`, picks the first *unpinned* mm on the GVT-wide LRU — any vGPU's —
# drops that lock and runs `invalidate_ppgtt_mm()` down to `ppgtt_free_spt()` →
# `intel_vgpu_unregister_page_track()` → `intel_gvt_page_track_remove()` on the *other* vGPU,
# holding only its own `vgpu_lock` (the other vGPU's `cache_lock` is taken and released on the
# way). Since 49a83e190b5b that other vGPU's `ptable` is guarded by *its* `vgpu_lock`.

# %%
reclaim = {lock: race.explore(lock, "two_vgpus_reclaim") for lock in race.LOCKS}
reclaim_nolockdep = {lock: race.explore(lock, "two_vgpus_reclaim", lockdep=False)
                     for lock in race.LOCKS}

# %%
# NBVAL_CHECK_OUTPUT
print(table(["ptable lock", "two_vgpus_reclaim", "lockdep off", "states"],
            [(lk, r.verdict, reclaim_nolockdep[lk].verdict, f"{r.states:,}")
             for lk, r in reclaim.items()]))

# %% [markdown]
# With lockdep the other vGPU's `lockdep_assert_held(&vgpu1->vgpu_lock)` in
# `__kvmgt_protect_table_find()` fires; without it (a production kernel) it is a use-after-free
# against VM 1's `kvmgt_page_track_write()`, which holds vGPU 1's lock and walks the table the
# reclaim frees. v1's dedicated `gfn_lock`, taken inside `intel_gvt_page_track_remove()` itself,
# would have excluded the foreign removal (its verdict is the handler's own deadlock); v6.6 moved
# the lock to the callers, and this caller holds the wrong vGPU's. The witness, as it would go
# into a reply (`kvmpt race v6.6 two_vgpus_reclaim --email --no-lockdep`):

# %%
# NBVAL_CHECK_OUTPUT
print(reclaim_nolockdep["vgpu_lock"].email())

# %% [markdown]
# **Preconditions.** Two vGPUs on one GVT host (two VMs); vGPU 1 has a shadowed PPGTT mm that is
# not pinned by a running workload, so it sits on `gvt->gtt.ppgtt_mm_lru_list_head`; on vGPU 0,
# `alloc_spt(GFP_KERNEL | __GFP_ZERO)` fails (memory pressure; an order-0 `GFP_KERNEL` allocation
# rarely fails outside fault injection or an OOM-killed task); meanwhile VM 1's vCPU writes a
# guest page table vGPU 1 shadows. The model also leaves out what the same path does to vGPU 1's
# `page_track_tree` (`intel_vgpu_unregister_page_track()` frees the `track` that vGPU 1's handler
# may be using) and its `spt`s.
#
# **Reproducing it on a real kernel.** Build with `CONFIG_PROVE_LOCKING=y` (the WARN) or
# `CONFIG_KASAN=y` (the use-after-free), `CONFIG_FAILSLAB=y` and
# `CONFIG_FAULT_INJECTION_DEBUG_FS=y`; start two VMs with a GVT-g vGPU each; in VM 1 keep a GPU
# context idle (its PPGTT shadowed, unpinned) while writing its page tables; then make VM 0's
# QEMU vCPU threads fail slab allocations: `echo 1 > /proc/<tid>/make-it-fail` for each vCPU
# thread, `echo N > /sys/kernel/debug/failslab/ignore-gfp-wait` (`GFP_KERNEL` may sleep, which
# failslab skips by default), `echo 1 > .../failslab/task-filter`, `probability 100`, `times`
# small, and have VM 0 create a new PPGTT (start a GPU workload). A failed `alloc_spt()` in VM
# 0's MMIO emulation then runs the reclaim against vGPU 1.

# %% [markdown]
# ### 5c. A second engine: SPIN
#
# Every design × scenario thread program is exported to Promela (`kvmpt.race.promela`: one
# process per thread, one atomic block per step, a line per place a bug can happen, a watchdog
# that turns SPIN's `timeout` into a deadlock) and SPIN searches the whole state space. SPIN does
# not use the explorer's successor function; the verdict is read from which bug lines SPIN
# reached. `tests/test_spin.py` asserts the same agreement on every CI run.

# %% tags=["nbval-ignore-output"]
from kvmpt.race import spin as race_spin

if race_spin.spin_available():
    spin_rows = race_spin.agreement()
    assert all(a.agrees for a in spin_rows)
    print(table(["scenario", "lock", "explorer", "SPIN", "states", "SPIN states", "SPIN s"],
                [(a.scenario, a.lock, a.verdict, a.spin_verdict, f"{a.states:,}",
                  f"{a.spin_states:,}", f"{a.spin_seconds:.1f}") for a in spin_rows],
                max_width=120))
    print(f"{len(spin_rows)} pairs, {sum(a.agrees for a in spin_rows)} agree (verdict and every "
          f"reachable bug kind); SPIN total {sum(a.spin_seconds for a in spin_rows):.0f} s "
          f"({race_spin.verify('none').spin_version})")
else:
    print("SPIN is not installed here (apt-get install spin); CI runs tests/test_spin.py.")

# %% [markdown]
# ## 6. Summary: each design × each effect
#
# The numbers above, side by side (columns: v6.5; v6.5 with the hook moved to commit; v6.6; and
# the ptable-walk proposal, for the DELETE rows only). The same table is in the plain-text report
# (`kvmpt report --format text`) for pasting into a reply.

# %%
summary_designs = claims.SUMMARY_DESIGNS
summary_cols, summary_rows, summary_numbers = claims.summary_table(
    summary_designs,
    {d.name: failed_move(d, "enomem") for d in summary_designs.values()},     # section 2
    {d.name: move_with_kvmgt(d) for d in summary_designs.values()},           # section 4
    verdicts, census, size_pages=max(sizes), tracked=TRACKED,                 # 5, 4
    exact_max_pages=EXACT_MAX_PAGES, seed=SEED)                               # 3: inside

# %%
# NBVAL_CHECK_OUTPUT
print(table(summary_cols, summary_rows))

# %% tags=["nbval-ignore-output"]
cost_figs.summary_table_figure(summary_cols, summary_rows).show()

# %% [markdown]
# *What to look at:* v6.6 is the only column with no stale page, no missed write, no wasted
# update and a safe lock; what it still pays is the O(npages) walk of a deleted slot, which the
# ptable walk would remove.

# %% [markdown]
# ### 6b. Try your own design
#
# Set `MY_DESIGN` to any combination of the four knobs — `slot_hook` ("flush" at S2c /
# "remove" at S7), `move` ("allow" / "reject"), `kvmgt_lock` ("none", "mmu_lock", "gfn_lock",
# "vgpu_lock"), `drop_protection_on_remove` — and run the cell: it re-runs every claim's
# experiment above on it, next to v6.6: the failed MOVE (`failed_move`, section 2), the DELETE
# of a 1 TiB slot (section 3, inside `claims.summary_table`), the allowed MOVE
# (`move_with_kvmgt`) and the QEMU traces (section 4), and the lock (`race.explore`, section 5).
# Edit the experiments above (say, make the failure come later) and this cell uses your edit.

# %%
# NBVAL_CHECK_OUTPUT
MY_DESIGN = Design.preset("v6.6").replace(kvmgt_lock="none")     # edit me


def every_claim(designs):
    """Every claim's experiment for each of ``designs`` ({column: Design}): the summary table."""
    ds = list(designs.values())
    return claims.summary_table(
        designs,
        {d.name: failed_move(d, "enomem") for d in ds},                          # section 2
        {d.name: move_with_kvmgt(d) for d in ds},                                # section 4
        {d.kvmgt_lock: race.explore(d.kvmgt_lock, write_vs_unshadow.name) for d in ds},  # 5
        claims.qemu_move_census(designs=ds, tracked=TRACKED, seed=SEED),         # section 4
        size_pages=max(sizes), tracked=TRACKED, exact_max_pages=EXACT_MAX_PAGES,
        seed=SEED, proposal=False)                                               # section 3


mine_cols, mine_rows, mine_numbers = every_claim({"v6.6": Design.preset("v6.6"),
                                                  "mine": MY_DESIGN})
print(f"mine = {MY_DESIGN.name}")
print(table(mine_cols, mine_rows))

# %% [markdown]
# The static export cannot run that cell, so these committed variants are precomputed, one
# button each: the v6.6 series with one of its four changes undone.

# %%
VARIANTS = {                                     # v6.6 with one change undone
    "flush hook": Design.preset("v6.6").replace(slot_hook="flush"),
    "MOVE allowed": Design.preset("v6.6").replace(move="allow"),
    "unlocked lookup": Design.preset("v6.6").replace(kvmgt_lock="none"),
    "drop protection": Design.preset("v6.6").replace(drop_protection_on_remove=True),
}
variant_results = {label: every_claim({**claims.SUMMARY_DESIGNS, "variant": d})
                   for label, d in VARIANTS.items()}
variant_tables = {label: (cols, rows) for label, (cols, rows, _) in variant_results.items()}

# %%
# NBVAL_CHECK_OUTPUT
shown = {"failed_missed": "missed", "move_stale": "MOVE stale", "wasted": "wasted",
         "hold_us": "mmu_lock", "verdict": "race"}             # summary rows, short
print(table(["v6.6 with", *shown.values()],
            [(label, *(claims.fmt_us(n["variant"][k]) if k == "hold_us" else n["variant"][k]
                       for k in shown))
             for label, (_, _, n) in variant_results.items()]))

# %% tags=["nbval-ignore-output"]
dashboard_figs.variant_tables(variant_tables).show()

# %% [markdown]
# *What to look at:* (the table above, the `variant` column of each button) v6.5's flush hook
# alone brings back both losses — every write missed after a failed MOVE, and the pages stranded
# even by the MOVE v6.6 rejects, because the hook has run at S2c before the rejection at S3;
# allowing MOVE strands them on a successful MOVE; the unlocked lookup is a use-after-free and,
# with KVMGT's writers back under `mmu_lock`, the 1 TiB DELETE holds it for the whole walk;
# dropping protection changes nothing at S7: the deleted slot has left the memslots, so
# `gfn_to_memslot()` finds no counts to drop and nothing is wasted.

# %% [markdown]
# ## 7. Explore: the dashboard
#
# In JupyterLab, the controls below re-run a whole scenario through `kvmpt.run` (the model with
# its Numba kernels: a booted q35/OVMF VM with a vGPU, GVT shadowing the chosen number of
# page-table pages, the guest writing at the chosen rate, and the scenario's memslot churn —
# QEMU-like, reboots, or an adversarial VMM that MOVEs RAM slots, some of them failing in
# prepare: the rates are printed below), then price one DELETE of the chosen slot size, and redraw both figures in place.
# The whole experiment is one call, `claims.evaluate(values)`. Building the dashboard runs it
# for every setting a design toggle leads to, and after each redraw a background thread runs it
# for every setting one click away (design knobs first), so a click usually redraws from
# results already computed. Without a kernel (the HTML report) the widgets are dead; the static
# figure after them holds the adversarial scenario precomputed for every combination of the
# design knobs.

# %% tags=["nbval-ignore-output"]
if DASHBOARD and not REPORT:
    from kvmpt.review.dashboard import Dashboard
    dashboard = Dashboard()
    display(dashboard.widget)
else:
    print("Dashboard not built here (static export); the figure below toggles the designs.")

# %%
from kvmpt.workload.scenario import load_scenario

adversarial = load_scenario("q35-adversarial")
variants = claims.static_variants("q35-adversarial", seed=SEED)   # 8 designs x kvmpt.run

# %%
# NBVAL_CHECK_OUTPUT
print(f"q35-adversarial: {adversarial.rate('move_rate'):g} MOVEs/s, "
      f"{adversarial.rate('prepare_fail_rate'):.0%} of them failing in prepare, "
      f"{adversarial.duration_s:g} s")
print(table(["design (q35-adversarial)", "MOVEs", "rejected", "failed", "missed", "stale"],
            [(name, r.summary["ops_MOVE"], r.summary["moves_rejected"],
              r.summary["prepare_failures"], f"{r.summary['missed_writes']:,}",
              f"{r.summary['stale_gfns_end']:,}") for name, r in variants.items()]))

# %% [markdown]
# Where the guest's writes went in the same runs, from the model's own accounting (`vm.write_stats`,
# `vm.work`): a write to a gfn nobody tracks completes in the guest (*direct*); a write to a
# write-tracked gfn faults and is emulated (*trapped*: `handled` when KVMGT's handler ran,
# `ignored` when `ptable` did not have it); a write to a gfn no memslot holds — the RAM slot
# was just MOVEd away — exits to the VMM (*MMIO*). Only trapped writes pay exit + emulation;
# the trapped-write time is priced by `kvmpt.workload.costs` from that accounting.

# %%
# NBVAL_CHECK_OUTPUT
print(table(["guest writes", "direct", "trapped", "handled", "ignored", "MMIO",
             "trapped time"],
            [(name, f"{s['writes_direct']:,}", f"{s['trapped_writes']:,}",
              f"{s['writes_handled']:,}", f"{s['writes_ignored']:,}", f"{s['writes_mmio']:,}",
              claims.fmt_us(s["trapped_write_us"]))
             for name, s in ((n, variants[n].summary) for n in ("v6.5", "v6.6"))]))

# %% tags=["nbval-ignore-output"]
memslot_figs.scenario_timeline(variants).show()

# %% tags=["nbval-ignore-output"]
sweep_figs.heatmap(sweep_table, "missed_writes", x="churn", y="tracked_gfns").show()

# %% [markdown]
# *What to look at:* pick designs from the drop-down. Every flush-hook design loses pages — even
# with MOVE rejected, because the flush hook has already run when the rejection comes at S3;
# every remove-hook design that allows MOVE loses them to the successful MOVEs; only remove +
# reject keeps the line at zero. The heatmap (the committed sweep, averaged over RAM sizes, write
# rates and seeds) says the same over every run of the sweep: under the adversarial VMM only
# v6.6 misses no write. Under reboot churn every design misses a few: a reset DELETEs guest RAM while GVT
# still shadows pages in it, which no page-track hook can help.
#
# ## Summary

# %%
FINDINGS = (   # shown here as a list; `kvmpt report` puts them first in summary.txt
    '**The flush hook was flawed** (section 2): a MOVE that fails after S2c — on bad input or'
    " on -ENOMEM — silently drops GVT's protection; every later page-table write is missed. "
    'Moving the hook to commit (S7) alone fixes it.',
    '**Dropping protection on DELETE was waste** (section 3): the counter and lpage updates '
    'land in arrays freed at S7, under an `mmu_lock` hold that grows with the slot. v6.6 '
    'drops them, but still probes every gfn of the slot; a ptable walk would make it '
    'O(tracked).',
    '**Rejecting MOVE costs QEMU nothing** (section 4): real QEMU traffic has no MOVE, and an'
    " allowed MOVE strands GVT's shadows whatever the hook.",
    '**The unlocked lookup was a use-after-free** (section 5); `mmu_lock` sleeps in atomic, '
    '`gfn_lock` deadlocks, `vgpu_lock` is safe.',
    '**The fixes need each other** (section 7): rejecting MOVE does not save a flush-hook '
    'kernel, and the commit-time hook does not save a kernel that allows MOVE.',
    '**Beyond the thread** (section 4): neither hook is told the address space, so a DELETE '
    "in the SMM address space purges KVMGT's entries for the same gfns of guest RAM, in v6.5 "
    'and v6.6.',
    '**Beyond the thread** (section 5b): in v6.6, a failed shadow-page allocation makes '
    "`reclaim_one_ppgtt_mm()` (gvt/gtt.c) free *another* vGPU's `ptable` entries holding only"
    " its own `vgpu_lock`: lockdep's assert fires, and without lockdep it is a use-after-free"
    " against that vGPU's `kvmgt_page_track_write()`. Needs two vGPUs and an allocation "
    'failure (reproducible with failslab). SPIN agrees with every verdict (section 5c).',
)
results.show_findings(FINDINGS)

# %% [markdown]
# ## Reproduce
#
# `./dev lab` opens this notebook in JupyterLab (the dashboard is live there); `./dev report`
# executes it and writes `build/report/01_page_track_hooks.html` (offline, design buttons) and
# `build/report/summary.txt` (the tables above, under 80 columns, for a reply on the list).
# After changing the model, `kvmpt report --update-notebooks` refreshes the committed outputs.
#
# ## References
#
# * Yan Zhao, "[PATCH] KVM: move memslot invalidation later than possible failures",
#   [\<20221108084416.11447-1-yan.y.zhao@intel.com\>](https://lore.kernel.org/r/20221108084416.11447-1-yan.y.zhao@intel.com), 2022-11-08.
# * Sean Christopherson, [\<Y2qSwlN26qWi3ZqH@google.com\>](https://lore.kernel.org/r/Y2qSwlN26qWi3ZqH@google.com), 2022-11-08: "Ugh, that's a terrible API".
# * Yan Zhao, "[PATCH v2 0/3] add track_remove_slot and remove track_flush_slot",
#   [\<20221111103247.22275-1-yan.y.zhao@intel.com\>](https://lore.kernel.org/r/20221111103247.22275-1-yan.y.zhao@intel.com), 2022-11-11.
# * Sean Christopherson, reply to v2 1/3, [\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com), 2022-11-11 (quoted in
#   sections 2-5).
# * Sean Christopherson, [\<Y7STZZkd3EaRXLTC@google.com\>](https://lore.kernel.org/r/Y7STZZkd3EaRXLTC@google.com), 2023-01-03 (the `gfn_lock` deadlock).
# * "drm/i915/gvt: KVM: KVMGT fixes and page-track cleanups", v1
#   [\<20221223005739.1295925-1-seanjc@google.com\>](https://lore.kernel.org/r/20221223005739.1295925-1-seanjc@google.com) … v4 [\<20230729013535.1070024-1-seanjc@google.com\>](https://lore.kernel.org/r/20230729013535.1070024-1-seanjc@google.com);
#   applied [\<169110211029.1965858.14581735700060429373.b4-ty@google.com\>](https://lore.kernel.org/r/169110211029.1965858.14581735700060429373.b4-ty@google.com); commits 49a83e190b5b
#   (vgpu_lock), aa611a99adb4 (reject MOVE), a41e34b05da7 (no protection drop), cc49e12d8d3b
#   (`track_remove_region`), b9ae8a09f357 and 1265fb534fa1 (flush hook gone).
# * "KVM: x86/mmu: Fix inverted check when detecting external page tracker(s)",
#   [\<ZPIwtfkVAyFWy41I@google.com\>](https://lore.kernel.org/r/ZPIwtfkVAyFWy41I@google.com), 2023-09-01.

# %%
results.save(seed=SEED, notes=claims.EFFECT_NOTES, findings=FINDINGS)
