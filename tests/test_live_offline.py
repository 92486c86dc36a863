"""``kvmpt.live`` without a kernel: the request generator, the host-profile rules in the
model, the measurement files, the figures, and the paths a machine without ``/dev/kvm``
takes (``kvmpt live``, notebook 02).  These run everywhere."""
from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpt import VM
from kvmpt.live import agreement_rows, kvm_usable, measurement_files
from kvmpt.live.calibrate import MMIO, OPS, Calibration, MeasurementError, Sample, read_toml, \
    write_toml
from kvmpt.cli.live import parse_size
from kvmpt.live.compare import MODEL_CASES, model_costs, model_trapped_write_us
from kvmpt.live.diff import DiffReport, Outcome, changed_rule
from kvmpt.live.host import host_profile
from kvmpt.live.model import ModelSide
from kvmpt.live.requests import UA_BASE, Request, generate, sequences
from kvmpt.kernel.memslot import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, V6_6

ROOT = Path(__file__).resolve().parent.parent
GiB, TiB = 1 << 30, 1 << 40
U64 = (1 << 64) - 1

#: what a 6.18 x86-64 host reports (this project's machines), for a host profile without KVM
FACTS = {"kernel": "6.18.44", "date": "2026-12-01", "kvm_cap_nr_memslots": 32764,
         "kvm_cap_multi_address_space": 0, "kvm_cap_readonly_mem": 1,
         "kvm_cap_user_memory2": 1, "kvm_cap_guest_memfd": 1,
         "user_ptr_max": (1 << 47) - 4096, "max_gfn": (1 << 40) - 1}
HOST = host_profile(facts=FACTS)


def err(vm, *args, v2=False, **kw):
    try:
        (vm.set_user_memory_region2 if v2 else vm.set_user_memory_region)(*args, **kw)
    except OSError as e:
        return e.errno
    return 0


# ------------------------------------------------------------------ the generator

def test_generator_is_deterministic_and_fits_the_ioctl():
    a, b = generate(5, 400), generate(5, 400)
    assert a == b and a != generate(6, 400)
    for r in a:
        assert 0 <= r.slot < 1 << 32 and 0 <= r.flags < 1 << 32
        assert all(0 <= x <= U64 for x in (r.gpa, r.size, r.ua, r.guest_memfd_offset))
        assert 0 <= r.guest_memfd < 1 << 32
    assert not any(r.v2 for r in generate(5, 400, region2=False))
    assert any(r.size == 0 for r in a) and any(r.v2 for r in a) and not all(r.v2 for r in a)


def test_sequences_cover_the_total():
    seqs = list(sequences(1, 120, 50))
    assert [len(r) for _, r in seqs] == [50, 50, 20]
    assert len({s for s, _ in seqs}) == 3
    with pytest.raises(ValueError, match="length"):
        list(sequences(1, 10, 0))


# ------------------------------------------------------ host-profile rules in the model

def test_host_profile_from_facts_cites_every_changed_field():
    assert HOST.address_spaces == 1 and HOST.user_memory2 and HOST.access_ok == "user-ptr-max"
    assert HOST.valid_flags == KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD
    src = dict(HOST.sources)
    for f in dataclasses.fields(HOST):
        if f.name not in ("name", "sources") and getattr(HOST, f.name) != getattr(V6_6, f.name):
            assert src[f.name][:3] in ("[M]", "[S]"), f.name
    no_gmem = host_profile(facts={**FACTS, "kvm_cap_guest_memfd": 0, "kvm_cap_readonly_mem": 0})
    assert no_gmem.valid_flags == KVM_MEM_LOG_DIRTY_PAGES
    # a 6.6-like host: no REGION2 (no V1 flag check), access_ok up to the sign bit
    old = host_profile(facts={**FACTS, "kvm_cap_user_memory2": 0, "kvm_cap_guest_memfd": 0,
                              "user_ptr_max": (1 << 63) - 4096,
                              "kvm_cap_multi_address_space": 2})
    assert dataclasses.replace(old, name=V6_6.name, sources=()) == V6_6


def test_region2_is_enotty_in_v66_and_like_region_on_the_host():
    assert err(VM(profile=V6_6), 0, 0, 0, 4096, UA_BASE, v2=True) == errno.ENOTTY
    vm = VM(profile=HOST)
    assert err(vm, 0, 0, 0, 4096, UA_BASE, v2=True) == 0
    assert [s.id for s in vm.memslots(0)] == [0]
    assert err(vm, 0, 0, 0, 0, UA_BASE, v2=True) == 0 and vm.memslots(0) == []


def test_access_ok_user_ptr_max_boundary():
    """1 TiB at 0x7f0000000000 ends at 1 << 47 > USER_PTR_MAX: -EINVAL on the host profile,
    accepted by v6.6's sign-bit check; ending at USER_PTR_MAX is fine on both."""
    assert err(VM(profile=HOST), 0, 0, 0, TiB, 0x7F00_0000_0000) == errno.EINVAL
    assert err(VM(profile=V6_6), 0, 0, 0, TiB, 0x7F00_0000_0000) == 0
    assert err(VM(profile=HOST), 0, 0, 0, TiB, (1 << 47) - 4096 - TiB) == 0


def test_one_address_space():
    assert err(VM(profile=HOST), 1 << 16, 0, 0, 4096, UA_BASE) == errno.EINVAL
    assert err(VM(profile=V6_6), 1 << 16, 0, 0, 4096, UA_BASE) == 0


def test_guest_memfd_rules_in_kernel_order():
    g = KVM_MEM_GUEST_MEMFD
    vm = VM(profile=HOST)
    # the first REGION ioctl takes only the v1 flags
    assert err(vm, 0, g, 0, 4096, UA_BASE) == errno.EINVAL
    # GUEST_MEMFD drops LOG_DIRTY_PAGES and READONLY from the valid flags
    assert err(vm, 0, g | KVM_MEM_READONLY, 0, 4096, UA_BASE, v2=True) == errno.EINVAL
    assert err(vm, 0, g | KVM_MEM_LOG_DIRTY_PAGES, 0, 4096, UA_BASE, v2=True) == errno.EINVAL
    # the offset must be page aligned (checked after access_ok, before the address space)
    assert err(vm, 0, g, 0, 4096, UA_BASE, v2=True, guest_memfd_offset=1) == errno.EINVAL
    # an overlap is found before the fd is looked up; then kvm_gmem_bind() finds no file
    assert err(vm, 1, 0, 0, 8192, UA_BASE) == 0
    assert err(vm, 2, g, 4096, 4096, UA_BASE, v2=True, guest_memfd=0xFFFFFFFF) == errno.EEXIST
    assert err(vm, 2, g, 1 << 20, 4096, UA_BASE, v2=True, guest_memfd=0xFFFFFFFF) == errno.EBADF
    # a GUEST_MEMFD request on an existing slot is refused ("private memslots are immutable")
    assert err(vm, 1, g, 0, 8192, UA_BASE, v2=True) == errno.EINVAL
    assert [s.id for s in vm.memslots(0)] == [1]            # nothing else changed
    with pytest.raises(ValueError, match="guest_memfd"):
        vm.set_user_memory_region2(3, 0, 0, 4096, UA_BASE, guest_memfd=-1)


def test_model_side_reports_the_deciding_rule():
    m = ModelSide(HOST, max_gfn=(1 << 36) - 1)
    assert m.apply(Request(0, 0, 0, 4096, UA_BASE)) == (0, "CREATE")
    e, why = m.apply(Request(1, 0, 1 << 48, 4096, UA_BASE))
    assert e == errno.EINVAL and "kvm_mmu_max_gfn" in why      # prepare, after the checks
    e, why = m.apply(Request(5, 0, 0, 4096, UA_BASE + 1))
    assert e == errno.EINVAL and "not page aligned" in why


def test_changed_rule_attribution():
    def out(v66, v66_why, model, model_why, v2=False):
        return Outcome(0, Request(0, 0, 0, 4096, UA_BASE, v2=v2), 0, model, model_why, v66,
                       v66_why)
    assert changed_rule(out(errno.ENOTTY, "x", 0, "CREATE", v2=True)).startswith(
        "KVM_SET_USER_MEMORY_REGION2")
    assert "USER_PTR_MAX" in changed_rule(out(0, "CREATE", 22, "access_ok(0x1, 0x2) fails"))
    assert "SMM" in changed_rule(out(0, "CREATE", 22, "address space 1 >= "
                                                      "KVM_ADDRESS_SPACE_NUM (1)"))
    # an overlap message names an address space, but no changed rule
    assert changed_rule(out(0, "CREATE", 17, "overlaps slot 3 of address space 0")) \
        .startswith("aftermath")


def test_diff_report_summary_lists_disagreements():
    rep = DiffReport(seed=1)
    o = Outcome(3, Request(7, 0, 0, 4096, UA_BASE), errno.EINVAL, 0, "CREATE", 0, "CREATE")
    rep.add([o])
    rep.disagreements.append((9, [o.request], o))
    text = "\n".join(rep.summary_lines())
    assert "0/1" in text and "DISAGREEMENTS: 1" in text and "host EINVAL, model 0" in text
    rows = agreement_rows(rep, None)
    assert rows[0][1:] == (1, 0, "0.00 %")


# ------------------------------------------------------------- measurement files

def _cal():
    return Calibration(host={"kernel": "k", "cpu": "c", "nested": True, "date": "d", "n": 3},
                       samples=[Sample(op, s, (1e-3 * s / GiB, 2e-3 * s / GiB))
                                for op in OPS for s in (GiB, 4 * GiB)]
                       + [Sample(MMIO, 0, (1e-5, 2e-5, 3e-5))], seconds=1.5)


def test_measurement_file_round_trip(tmp_path):
    cal = _cal()
    back = read_toml(write_toml(cal, tmp_path / "h.toml"))
    assert back.host == cal.host and back.sizes() == [GiB, 4 * GiB]
    assert back.get(MMIO).median == pytest.approx(2e-5)
    assert "nested" in back.label


@pytest.mark.parametrize("edit, where", [
    (lambda t: t.replace('tag = "[M]"\nseconds', 'tag = "[G]"\nseconds'), "[run] field 'tag'"),
    (lambda t: t.replace('op = "CREATE"', 'op = "CREAT"', 1), "field 'op'"),
    (lambda t: t.replace("[run]", "[runs]"), "missing [run]"),
    (lambda t: t.replace("size = 1073741824", "size = -1", 1), "field 'size'"),
    (lambda t: t.replace("seconds = [", "seconds = [nan, ", 1), "field 'seconds'"),
    (lambda t: t.replace('op = "CREATE"', 'op = "CREATE"\nextra = 1', 1), "unknown field"),
    (lambda t: t.replace("[host]", "[host", 1), "not valid TOML"),
])
def test_measurement_file_errors_name_the_place(tmp_path, edit, where):
    p = write_toml(_cal(), tmp_path / "h.toml")
    p.write_text(edit(p.read_text()))
    with pytest.raises(MeasurementError, match=r"h\.toml:") as exc:
        read_toml(p)
    assert where in str(exc.value)


def test_committed_measurements():
    files = measurement_files()
    assert files, "data/host/ has no measurement file"
    for p in files:
        cal = read_toml(p)
        assert {"kernel", "cpu", "nested", "date", "max_gfn", "user_ptr_max"} <= set(cal.host)
        assert cal.sizes()[0] == GiB and cal.sizes()[-1] >= 4 * TiB
        for op in OPS:
            meds = [cal.get(op, s).median for s in cal.sizes()]
            assert all(m > 0 for m in meds)
        assert cal.get(MMIO).median > 0
        assert p.name in (ROOT / "data" / "README.md").read_text()


# ----------------------------------------------------------------- model prices

def test_model_prices_kvm_constant_kvmgt_walk_linear():
    pts = {(p.case, p.op, p.size): p for p in model_costs([GiB, 2 * GiB, 4 * GiB])}
    alone, walk65 = MODEL_CASES[0][0], MODEL_CASES[1][0]
    assert pts[(alone, "DELETE", GiB)].us == pts[(alone, "DELETE", 4 * GiB)].us
    d1, d2, d4 = (pts[(walk65, "DELETE", s)].us for s in (GiB, 2 * GiB, 4 * GiB))
    assert d4 - d2 == pytest.approx(2 * (d2 - d1), rel=1e-9) and d2 > d1
    assert pts[(MODEL_CASES[2][0], "MOVE", GiB)].errno == errno.EINVAL   # v6.6 + KVMGT
    tw = model_trapped_write_us()
    assert 0 < tw["vm_exit"] < tw["vm_exit + emulation"]
    assert tw["mmio_exit (KVM_EXIT_MMIO round trip)"] > tw["vm_exit"]


def test_figures_name_the_machine():
    from kvmpt.review.figures.live import agreement_table_figure, calibration_figure, mmio_figure
    cal = _cal()
    fig = calibration_figure(cal, model_costs(cal.sizes()))
    assert "k, c, nested, d" in fig.layout.title.text
    assert len(fig.layout.updatemenus[0].buttons) == len(OPS)
    assert sum(bool(t.visible) for t in fig.data) == 1 + len(MODEL_CASES)
    assert fig.layout.yaxis.title.text.startswith("time per ioctl (µs")
    assert "k, c" in mmio_figure(cal, model_trapped_write_us()).layout.title.text
    assert agreement_table_figure([("a", 1, 1, "100.00 %")], "m").layout.title.text


# ------------------------------------------------------------------- no /dev/kvm

def test_kvm_usable_names_the_reason():
    ok, why = kvm_usable("/nonexistent/kvm")
    assert not ok and "/nonexistent/kvm does not exist" in why


def test_cli_without_kvm_says_why(capsys):
    from kvmpt.cli import main
    assert main(["live", "--kvm", "/nonexistent/kvm", "--requests", "10"]) == 2
    assert "cannot run here: /nonexistent/kvm does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("text, n", [("1G", GiB), ("4T", 4 * TiB), ("512MiB", 512 << 20)])
def test_parse_size(text, n):
    assert parse_size(text) == n


def test_parse_size_error():
    with pytest.raises(ValueError, match="--sizes: '3X'"):
        parse_size("3X")


def test_notebook_02_degrades_without_kvm(tmp_path):
    """Notebook 02 runs top to bottom where /dev/kvm is missing: it says why, skips the
    live sections and plots the committed measurement of the machine it names."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    src = ROOT / "notebooks" / "02_live_kernel.ipynb"
    out = tmp_path / "02.ipynb"
    env = dict(os.environ, KVMPT_KVM_DEVICE="/nonexistent/kvm", KVMPT_REPORT="1")
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                    "--execute", "--ExecutePreprocessor.kernel_name=python3",
                    f"--output-dir={tmp_path}", "--output=02", str(src)],
                   env=env, check=True, capture_output=True, timeout=300)
    nb = nbformat.read(str(out), as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "skipped: /nonexistent/kvm does not exist" in text
    assert "not measured here" in text and "committed measurement of" in text
