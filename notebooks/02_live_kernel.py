# %% [markdown]
# # Checked against this machine's kernel
#
# **The question.** kvmpt's model of `KVM_SET_USER_MEMORY_REGION` was written from the kernel
# source (v6.5/v6.6). Does it answer like a running kernel does, request by request, and where
# a newer kernel answers differently, is the difference a rule that changed after v6.6 rather
# than a model bug? And how do the model's cost assumptions (`data/costs.toml`) compare with
# what memslot ioctls and a trapped write cost on a real KVM?
#
# This notebook runs on the machine that executes it: where `/dev/kvm` is usable it sends
# requests to fresh live VMs, replays the committed QEMU traces on them and times the
# ioctls; everywhere else it says why it cannot and shows the committed measurement of the
# machine named in the plot.
#
# | kernel | kvmpt |
# |---|---|
# | `KVM_SET_USER_MEMORY_REGION(2)` on a VM fd | `kvmpt.live.ioctl.LiveVM.set_user_memory_region(2)` (returns the errno) |
# | the same ioctl in the model | `VM.set_user_memory_region(2)` -> `memslot.check_set_user_memory_region` |
# | version-dependent rules (`KVM_USER_MEM_SLOTS`, address spaces, `access_ok()`, REGION2, guest_memfd) | `memslot.KernelProfile`: `V6_6` and the host's (`live.host.host_profile`) |
# | `kvm_mmu_max_gfn()` | `VM(max_gfn=...)`, probed on the host |
# | a vCPU's `KVM_RUN` -> `KVM_EXIT_MMIO` | `live.calibrate.mmio_round_trip` |
# | cycles per primitive | `data/costs.toml` (`kvmpt.workload.costs`), priced by `live.compare.model_costs` |
#
# Contents: 1. this machine and its rules · 2. differential test · 3. committed traces ·
# 4. memslot ioctl costs · 5. a trapped write · summary · references.

# %% tags=["parameters"]
REQUESTS = 2000                 # section 2: generated requests (the benchmark sends 10,000)
SEED = 0
SIZES_GIB = (1, 16, 256, 1024, 4096)   # section 4: slot sizes, 1 GiB .. 4 TiB
REPEAT = 1                      # section 4: repetitions per size (kvmpt live uses 3)
MMIO_N = 5000                   # section 5: trapped writes per batch

# %%
from kvmpt.review import results
from kvmpt.review.figures import live as live_figs
from kvmpt.live import agreement_rows, kvm_usable, measurement_files
from kvmpt.live.calibrate import calibrate, read_toml
from kvmpt.live.compare import model_costs, model_price_table, model_trapped_write_us
from kvmpt.live.diff import describe_requests, differential
from kvmpt.live.host import host_facts, host_profile
from kvmpt.live.ioctl import Kvm
from kvmpt.live.traces import replay_traces
from kvmpt.kernel.memslot import V6_6
from kvmpt.infra.text import table

RULE_FIELDS = ("user_mem_slots", "mem_slots_num", "address_spaces", "valid_flags", "v1_flags",
               "max_nr_pages", "access_ok", "user_ptr_max", "user_memory2")
LIVE, WHY = kvm_usable()
print("live KVM checks: " + ("run on this machine" if LIVE else f"skipped: {WHY}"))

# %% [markdown]
# ## 1. This machine and the rules it applies
#
# The host profile starts from `V6_6` and replaces each rule this kernel answers differently:
# from `KVM_CHECK_EXTENSION` on a VM, or measured with one-page memslots (the largest gfn a
# slot may reach, the highest end of a user range `access_ok()` accepts). Each field names
# where its value comes from (`[M]` measured here, `[S]` the kernel source). First the rules of
# v6.5/v6.6 the model was written from, the same on every machine:

# %%
# NBVAL_CHECK_OUTPUT
print(table(("rule (KernelProfile field)", "v6.5/v6.6"),
            [(f, str(getattr(V6_6, f))) for f in RULE_FIELDS], align="ll"))

# %% [markdown]
# Then this machine's kernel, beside them:

# %% tags=["nbval-ignore-output"]
if LIVE:
    with Kvm() as kvm:
        facts = host_facts(kvm)
    profile = host_profile(facts=facts)
    rows = [(f, str(getattr(V6_6, f)), str(getattr(profile, f))) for f in RULE_FIELDS]
    rows.append(("max_gfn (kvm_mmu_max_gfn)", "host's", f"{facts['max_gfn']:#x}"))
    print(f"{facts['kernel']} on {facts['cpu']} ({facts['kvm_module']}"
          f"{', nested' if facts['nested'] else ''})\n")
    print(table(("rule", "v6.6", "this kernel"), rows, align="lll"))
    print()
    for field, source in profile.sources:
        print(f"{field}: {source}")
else:
    print(f"No usable /dev/kvm here ({WHY}); sections 2 and 3 are skipped.")

# %% [markdown]
# *What to look at:* the rows where the two columns differ are the rules that changed after
# v6.6 on this kernel; every other rule is v6.6's.
#
# ## 2. Differential test: the model and the kernel, errno by errno
#
# Seeded random sequences of valid and invalid requests (misaligned sizes and addresses,
# unknown flags, slot ids near and past the limit, address spaces, overlaps, MOVE,
# FLAGS_ONLY, DELETE of present and missing slots, sizes up to 8 TiB and past the page limit,
# REGION2 with guest_memfd fields) go to a fresh live VM per sequence and to two model VMs,
# one under this kernel's profile and one under v6.6. A disagreement would be shrunk to a
# minimal sequence and printed with both errnos. The requests depend on the seed alone; what
# the v6.6 model answers to them is the same on every machine:

# %%
# NBVAL_CHECK_OUTPUT
print(describe_requests(SEED, REQUESTS))

# %% [markdown]
# Now the same requests on this machine's kernel:

# %% tags=["nbval-ignore-output"]
if LIVE:
    rep = differential(total=REQUESTS, seed=SEED, host_profile=profile)
    print("\n".join(rep.summary_lines()))
    assert not rep.disagreements and rep.agreement == 1.0 and rep.unchanged_agreement == 1.0
else:
    rep = None
    print(f"skipped: {WHY}")

# %% [markdown]
# *What to look at:* "agreement, host rules" is the model under this kernel's profile;
# "agreement, v6.5/v6.6" covers the requests whose answer no changed rule touches. The
# remaining requests are listed by the rule that changed.
#
# ## 3. The committed QEMU traces, replayed on this kernel
#
# Each trace of `data/traces/` that records one VM is replayed op by op on a fresh live VM.
# A recorded result either matches the host's answer, or differs in a way the two profiles
# predict (the v6.6 model gives the recorded answer, the host-profile model the host's).

# %% tags=["nbval-ignore-output"]
if LIVE:
    traces = replay_traces(profile, V6_6, facts["max_gfn"])
    for name, ops in traces.items():
        assert all(o.host == o.model and o.status != "unexplained" for o in ops), name
        explained = sorted({o.reason for o in ops if o.status == "explained"})
        print(f"{name}: {len(ops)} ops; explained by the profile: {explained or 'none'}")
    live_figs.agreement_table_figure(
        agreement_rows(rep, traces), f"{facts['kernel']}, {facts['cpu']}").show()
else:
    print(f"skipped: {WHY}")

# %% [markdown]
# *What to look at:* every row should read 100 %: the SMM-on trace's address-space-1 ops are
# refused by a kernel without an SMM address space, which the profile predicts.
#
# ## 4. What memslot ioctls cost on this kernel, beside the model's prices
#
# One slot of each size, on a fresh VM: CREATE, dirty logging on and off (FLAGS_ONLY), MOVE,
# DELETE. The user range is never mapped or touched. Dashed lines are the model's prices
# (`data/costs.toml`) of the same operation: KVM alone (memslot swaps, the fast zap), and
# with KVMGT attached, whose v6.5 `track_flush_slot` walks every gfn of the slot. The model's
# prices first (they depend only on `data/costs.toml`):

# %%
# NBVAL_CHECK_OUTPUT
print(model_price_table([g << 30 for g in SIZES_GIB]))

# %% tags=["nbval-ignore-output"]
if LIVE:
    cal = calibrate([g << 30 for g in SIZES_GIB], REPEAT, MMIO_N, host=facts)
    print(f"measured here: {cal.label}; {cal.seconds:.1f} s; peak RSS "
          f"{cal.peak_rss_before >> 20} -> {cal.peak_rss_after >> 20} MiB")
else:
    cal = read_toml(measurement_files()[-1])
    print(f"not measured here ({WHY}); showing the committed measurement of {cal.label}")
live_figs.calibration_figure(cal, model_costs(cal.sizes())).show()

# %% [markdown]
# *What to look at:* the host's times grow linearly with the slot from 1 GiB to 4 TiB, while
# the model prices KVM's own part of an update as a constant; pick DELETE to compare KVMGT's
# v6.5 slot walk of a slot (red dashes) with the kernel's own DELETE of that slot (green).
#
# ## 5. One trapped write
#
# A real-mode guest of two instructions stores to a `KVM_MEM_READONLY` slot in a loop; each
# store exits to this process with `KVM_EXIT_MMIO`: the `mmio_exit` the model prices for a guest
# write no memslot (or a read-only one) takes, and an upper bound for the in-kernel exit and
# emulation it prices for a write-tracked page.

# %% tags=["nbval-ignore-output"]
live_figs.mmio_figure(cal, model_trapped_write_us()).show()

# %% [markdown]
# *What to look at:* the host bar and the model's `mmio_exit` bar price the same round trip
# (`data/costs.toml` takes it from a measurement); a write-tracked gfn's in-kernel exit +
# emulation does not return to userspace and should sit below both.
#
# ## Summary

# %%
FINDINGS = (   # shown here as a list; `kvmpt report` puts them first in summary.txt
    "The model's memslot rules hold against a running kernel once the rules that changed "
    'after v6.6 are data (`KernelProfile`); the notebook and `kvmpt live` print the agreement'
    ' of the run.',
    'Memslot ioctls on a real kernel cost time linear in the slot size (metadata allocation '
    "and freeing), which the model does not price: the model's costs are the page-track hooks"
    ' and the memslot swaps around them.',
    'Rerun it on your machine: `kvmpt live` prints the same checks as text and writes a '
    'measurement file (`data/README.md`, `data/host/`).',
)
results.show_findings(FINDINGS)

# %% tags=["nbval-ignore-output"]
if LIVE:
    print(f"- {rep.requests:,} generated requests: {100 * rep.agreement:.2f} % agree under "
          f"this kernel's profile, {100 * rep.unchanged_agreement:.2f} % of the "
          f"{rep.unchanged:,} whose rule did not change agree under v6.6")
    print(f"- {len(traces)} committed traces: every op matches or is explained by the profile")
d1 = cal.get("DELETE", 1 << 40) if (1 << 40) in cal.sizes() else None
if d1 is not None:
    walk = next(p for p in model_costs([1 << 40]) if p.op == "DELETE"
                and p.case.startswith("model: v6.5"))
    print(f"- DELETE of a 1 TiB slot: {d1.median * 1e3:.0f} ms on {cal.host['kernel']}; the "
          f"model prices KVMGT's v6.5 walk of it at {walk.us / 1e3:.0f} ms")
print(f"- trapped write round trip: {cal.get('MMIO_ROUND_TRIP').median * 1e6:.1f} µs")

# %% [markdown]
# ## References
#
# * `virt/kvm/kvm_main.c`: `kvm_vm_ioctl_set_memory_region()`, `__kvm_set_memory_region()`
#   (v6.5/v6.6) and `kvm_set_memory_region()` with `KVM_SET_USER_MEMORY_REGION2`,
#   `KVM_SET_USER_MEMORY_REGION_V1_FLAGS` and `check_memory_region_flags()` (6.8+).
# * `arch/x86/include/asm/uaccess_64.h`: `__access_ok()`, `valid_user_address()` against
#   `runtime_const_ptr(USER_PTR_MAX)` (6.12+); the sign-bit check of v6.4..v6.11.
# * `arch/x86/kvm/mmu.h`: `kvm_mmu_max_gfn()`; `arch/x86/kvm/x86.c`:
#   `kvm_arch_prepare_memory_region()`.
# * `Documentation/virt/kvm/api.rst`: `KVM_SET_USER_MEMORY_REGION(2)`, `KVM_CAP_NR_MEMSLOTS`,
#   `KVM_CAP_MULTI_ADDRESS_SPACE`, `KVM_EXIT_MMIO`.
# * Sean Christopherson, "KVM: x86: add a new page track hook track_remove_slot" review,
#   [\<Y26SI3uh8JV0vvO6@google.com\>](https://lore.kernel.org/r/Y26SI3uh8JV0vvO6@google.com),
#   2022-11-11 (the slot walk whose cost section 4 puts beside a real DELETE).

# %%
results.save(seed=SEED, findings=FINDINGS)
