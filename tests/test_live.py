"""The model against the running kernel (``kvmpt.live``): needs a usable ``/dev/kvm``.

Every test here is skipped, with the reason, where ``/dev/kvm`` is missing or unusable
(a laptop without KVM, a container).  Where it is usable they all run: each test that
passes appends its name to the file named by ``KVMPT_LIVE_RESULTS`` (if set), and
``.ci/run`` fails when a machine with a usable ``/dev/kvm`` ran none of them.

Speed goals (10,000 requests in < 60 s, calibration in < 2 min) live in
``benchmarks/live_bench.py``; these tests use small sizes.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmpt.live.calibrate import MMIO, OPS, calibrate, read_toml, write_toml
from kvmpt.live.diff import differential, run_sequence
from kvmpt.live.host import host_facts, host_profile
from kvmpt.live.ioctl import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, \
    Kvm, kvm_usable
from kvmpt.live.model import ModelSide
from kvmpt.live.requests import UA_BASE, Request
from kvmpt.live.traces import replay_traces, trace_files
from kvmpt.kernel.memslot import V6_6

USABLE, WHY = kvm_usable()
pytestmark = pytest.mark.skipif(not USABLE, reason=f"live KVM checks need a usable /dev/kvm: "
                                                   f"{WHY}")
GiB, TiB = 1 << 30, 1 << 40


def _record(name: str) -> None:
    """A live check passed: append it to $KVMPT_LIVE_RESULTS (read by .ci/run, which
    counts distinct check names)."""
    path = os.environ.get("KVMPT_LIVE_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"check": name, "outcome": "passed"}) + "\n")


@pytest.fixture(scope="module")
def host():
    with Kvm() as kvm:
        facts = host_facts(kvm)
    return facts, host_profile(facts=facts)


def test_host_facts_and_profile(host):
    facts, prof = host
    assert facts["api_version"] == 12
    assert facts["kvm_cap_nr_memslots"] == prof.user_mem_slots > 0
    assert prof.address_spaces == max(1, facts["kvm_cap_multi_address_space"])
    assert prof.access_ok == "user-ptr-max" and prof.user_ptr_max == facts["user_ptr_max"]
    # every field that differs from v6.6 says where its value comes from
    changed = [f.name for f in dataclasses.fields(prof)
               if f.name not in ("name", "sources") and getattr(prof, f.name) != getattr(V6_6,
                                                                                         f.name)]
    cited = dict(prof.sources)
    for name in changed:
        assert cited.get(name, "")[:3] in ("[M]", "[S]"), f"{name} has no source"
    _record("host_facts_and_profile")


def test_access_ok_top_of_user_space(host):
    """The issue's measurement: a 1 TiB region at 0x7f0000000000 (ending at 1 << 47) is
    -EINVAL on a kernel with USER_PTR_MAX = TASK_SIZE_MAX; v6.6 (sign bit) accepts it (and
    then refuses the second request as a modify of slot 0 with another userspace_addr)."""
    facts, prof = host
    if facts["user_ptr_max"] >= 1 << 47:
        pytest.skip(f"this kernel's user space reaches {facts['user_ptr_max']:#x} (5-level paging)")
    req = Request(0, 0, 0, TiB, 0x7F00_0000_0000)
    ok_req = Request(0, 0, 0, TiB, facts["user_ptr_max"] - TiB)
    with Kvm() as kvm:
        outs = run_sequence(kvm, [req, ok_req, Request(0, 0, 0, 0, ok_req.ua)], prof, V6_6,
                            facts["max_gfn"])
    assert [(o.host, o.model, o.v66) for o in outs] == [
        (errno.EINVAL, errno.EINVAL, 0), (0, 0, errno.EINVAL), (0, 0, 0)]
    _record("access_ok_top_of_user_space")


def test_differential_seeded(host):
    rep = differential(total=2_000, seed=11, length=50, host_profile=host[1])
    assert rep.requests == 2_000 and rep.sequences == 40
    assert not rep.disagreements, "\n".join(rep.summary_lines())
    assert rep.agreement == 1.0 and rep.unchanged_agreement == 1.0
    assert rep.unchanged > 500                    # most requests' rules did not change
    assert {"0", "EINVAL", "EEXIST"} <= set(rep.by_errno)
    _record("differential_seeded")


def test_a_wrong_profile_is_caught_shrunk_and_restarted(host):
    """The checker can fail: a profile with 100 user slots disagrees with the host on
    slot ids 100..32763; the disagreement is shrunk to a minimal sequence and the run
    goes on with fresh VMs (the model and the host never stay out of step)."""
    wrong = dataclasses.replace(host[1], user_mem_slots=100)
    rep = differential(total=300, seed=3, length=50, host_profile=wrong)
    assert rep.disagreements and rep.agreement < 1.0
    assert rep.sequences == 6 and rep.restarts == len(rep.disagreements)
    for _, reqs, out in rep.disagreements:
        assert 100 <= out.request.id < host[1].user_mem_slots
        assert out.host != out.model
        assert len(reqs) <= 2          # at most a setup request and the disagreeing one
    _record("wrong_profile_caught")


_INTERESTING = dict(
    slot=st.sampled_from([0, 1, 2, 3, 32763, 32764, 1 << 16, (1 << 16) | 1, 2 << 16]),
    flags=st.sampled_from([0, 0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_MEM_GUEST_MEMFD,
                           KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY, 1 << 5]),
    gpa=st.sampled_from([0, 2 << 20, 4 << 20, 0x1000, 1 << 32, (1 << 52) - (2 << 20),
                         (1 << 64) - 4096]),
    size=st.sampled_from([0, 4096, 2 << 20, 4 << 20, 4097, 1 << 63, ((1 << 31)) << 12]),
    ua=st.sampled_from([UA_BASE, UA_BASE + (2 << 20), UA_BASE + 1, (1 << 47) - (2 << 20),
                        (1 << 47) - 4096, 1 << 63]),
    v2=st.booleans(),
    guest_memfd_offset=st.sampled_from([0, 4096, 1]),
    guest_memfd=st.just(0xFFFF_FFFF),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(st.builds(Request, **_INTERESTING), min_size=1, max_size=12))
def test_differential_hypothesis(host, reqs):
    """Hypothesis draws request sequences from the values the checks look at, and
    shrinks any sequence on which host and model disagree."""
    facts, prof = host
    with Kvm() as kvm:
        outs = run_sequence(kvm, reqs, prof, V6_6, facts["max_gfn"])
    bad = [o.describe() for o in outs if not o.agree]
    assert not bad, bad
    _record("differential_hypothesis")     # once per example; .ci/run counts names


def test_committed_traces_agree(host):
    facts, prof = host
    res = replay_traces(prof, V6_6, facts["max_gfn"])
    assert set(res) == {p.name for p in trace_files()} and len(res) >= 3
    for name, ops in res.items():
        assert ops, name
        for o in ops:
            assert o.host == o.model, o.describe()
            assert o.status != "unexplained", o.describe()
    smm_on = res["i440fx_seabios_40g_smm_on.trace"]
    if prof.address_spaces == 1:     # no SMM address space: every AS1 op is explained
        assert {o.reason for o in smm_on if o.status == "explained"} == {
            "address space 1 >= KVM_ADDRESS_SPACE_NUM (1)"}
    _record("committed_traces_agree")


def test_calibration_small_and_data_file(host, tmp_path):
    cal = calibrate(sizes=[GiB], repeat=2, mmio_n=300, host=host[0])
    assert {s.op for s in cal.samples} == set(OPS) | {MMIO}
    for s in cal.samples:
        assert len(s.seconds) >= 2 and all(x > 0 for x in s.seconds)
        assert s.low <= s.median <= s.high
    back = read_toml(write_toml(cal, tmp_path / "host.toml"))
    assert back.host == cal.host
    assert [(s.op, s.size) for s in back.samples] == [(s.op, s.size) for s in cal.samples]
    assert back.get("DELETE", GiB).median == pytest.approx(cal.get("DELETE", GiB).median)
    _record("calibration_small")


def test_hygiene_fds_closed_rss_flat_for_4tib_slots():
    """In a fresh process: CREATE, dirty log on, MOVE and DELETE of a 4 TiB slot, a
    differential run and the MMIO guest leave no fd open and the peak RSS within
    32 MiB of where it started (nothing is mapped or touched)."""
    code = textwrap.dedent("""
        import json, os
        from kvmpt.live.calibrate import peak_rss_bytes, mmio_round_trip
        from kvmpt.live.diff import differential
        from kvmpt.live.ioctl import KVM_MEM_LOG_DIRTY_PAGES, Kvm
        from kvmpt.live.requests import UA_BASE
        fds = len(os.listdir('/proc/self/fd'))
        rss = peak_rss_bytes()
        with Kvm() as kvm:
            with kvm.create_vm() as vm:
                for flags, gpa, size in ((0, 0, 4 << 40), (KVM_MEM_LOG_DIRTY_PAGES, 0, 4 << 40),
                                         (KVM_MEM_LOG_DIRTY_PAGES, 4 << 40, 4 << 40),
                                         (0, 4 << 40, 0)):
                    assert vm.set_user_memory_region(0, flags, gpa, size, UA_BASE) == 0
            mmio_round_trip(kvm, 100, 1)
        mid = peak_rss_bytes()
        differential(total=200, seed=5)
        print(json.dumps([fds, len(os.listdir('/proc/self/fd')), rss, mid]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    fds0, fds1, rss0, rss1 = json.loads(out.stdout.splitlines()[-1])
    assert fds1 == fds0
    assert rss1 - rss0 < 32 << 20, f"peak RSS grew by {(rss1 - rss0) >> 20} MiB"
    _record("hygiene_fds_rss")


def test_cli_live(tmp_path, capsys):
    from kvmpt.cli import main
    rc = main(["live", "--requests", "300", "--sizes", "1G", "--repeat", "1",
               "--out", str(tmp_path), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert re.search(r"^agreement, host rules +300/300 \(100\.00 %\)$", text, re.M)
    assert re.search(r"^disagreements +none$", text, re.M) and "unexplained" in text
    assert all(len(line) <= 79 for line in text.splitlines())
    files = list(tmp_path.glob("host-*.toml"))
    assert len(files) == 1 and read_toml(files[0]).get("CREATE", GiB)
    _record("cli_live")


def test_model_side_v66_has_no_region2(host):
    """Not a host check: the v6.6 model answers REGION2 with -ENOTTY (and REGION alike
    under both profiles for a plain CREATE)."""
    m = ModelSide(V6_6)
    assert m.apply(Request(0, 0, 0, 4096, UA_BASE, v2=True))[0] == errno.ENOTTY
    assert m.apply(Request(0, 0, 0, 4096, UA_BASE))[0] == 0
    _record("model_side_v66")
