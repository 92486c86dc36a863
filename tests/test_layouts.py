"""kvmpt.workload.layouts: the layout data files, their validation and the ops they generate."""
from __future__ import annotations

from pathlib import Path

import pytest

from kvmpt.workload.layouts import (TAGS, LayoutError, build_ops, churn_ops, final_state,
                           layout_names, layout_ops, load_layout)
from kvmpt.workload.trace import load_qemu_trace

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces"

EXPECTED = {"i440fx-seabios", "i440fx-seabios-smm", "q35-ovmf", "q35-ovmf-smm"}


def test_shipped_layouts_load():
    assert EXPECTED <= set(layout_names())
    for name in layout_names():
        lay = load_layout(name)
        assert lay.name == name
        assert all(s.tag in TAGS and s.source for s in lay.slots)
        assert len(lay.with_role("vgpu-aperture")) == len(lay.address_spaces)
        assert lay.with_role("ram-low") and lay.with_role("ram-high")
        assert lay.smm == (lay.address_spaces == [0, 1])


def test_vgpu_aperture_is_a_v5_4_slice():
    """workloads.md §1.4: GVTg_V5_4 low_gm = 128 MiB = 32,768 pages."""
    for name in EXPECTED:
        for s in load_layout(name).with_role("vgpu-aperture"):
            assert s.npages == 32768 and s.flags == 0


def test_q35_numbers_from_workloads():
    smm = load_layout("q35-ovmf-smm")
    low0 = [s for s in smm.with_role("ram-low") if s.as_id == 0][0]
    assert low0.npages == 519936                 # §1.3 D: 2 GiB - 1 MiB - 16 MiB TSEG
    high = [s for s in smm.with_role("ram-high") if s.as_id == 0][0]
    assert (high.gpa, high.npages) == (1 << 32, 1572864)
    assert [s.gpa for s in smm.with_role("smram-high")] == [0xfeda0000]
    vars_, code = smm.with_role("flash-vars")[0], smm.with_role("flash-code")[0]
    assert (vars_.gpa, vars_.npages, code.gpa, code.npages) == (0xffc00000, 132,
                                                                0xffc84000, 892)
    off = load_layout("q35-ovmf")
    assert [s.size for s in off.with_role("ram-low")] == [0x7ff00000]   # Xiaoyao Li's trace
    assert off.address_spaces == [0]


@pytest.mark.parametrize("layout, trace", [
    ("i440fx-seabios", "i440fx_seabios_40g_smm_off.trace"),
    ("i440fx-seabios-smm", "i440fx_seabios_40g_smm_on.trace"),
])
def test_i440fx_layouts_are_the_trace_end_state_plus_the_vgpu(layout, trace):
    lay = load_layout(layout)
    end = final_state(load_qemu_trace(TRACES / trace))
    got = {(s.as_id, s.slot): (s.gpa, s.size, s.flags, s.ua) for s in lay.slots
           if s.role != "vgpu-aperture"}
    want = {k: (o.gpa, o.size, o.flags, o.ua) for k, o in end.items()}
    assert got == want
    assert len(lay.slots_in(0)) == 11             # §1.3 A: 10 slots + the vGPU


def test_build_ops_create_each_slot_once_as0_first():
    for name in EXPECTED:
        lay = load_layout(name)
        ops = build_ops(lay)
        assert len(ops) == len(lay.slots)
        assert all(o.size > 0 and o.ret == 0 for o in ops)
        assert [o.as_id for o in ops] == sorted(o.as_id for o in ops)
        state = final_state(ops)
        assert set(state) == {(s.as_id, s.slot) for s in lay.slots}


def test_churn_pairs_restore_the_layout_and_never_move():
    for name in EXPECTED:
        lay = load_layout(name)
        ops = layout_ops(name, churn=True)
        churn = churn_ops(lay)
        assert ops[len(lay.slots):] == churn
        want = sum(c.pairs * 2 * len(lay.with_role(*c.roles)) for c in lay.churn)
        assert len(churn) == want
        # every CREATE re-creates the slot where it was: DELETE + CREATE, never a MOVE
        def shape(state):
            return {k: (o.gpa, o.size, o.flags, o.ua) for k, o in state.items()}
        assert shape(final_state(ops)) == shape(final_state(build_ops(lay)))
        for o in churn:
            s = [x for x in lay.slots if (x.as_id, x.slot) == (o.as_id, o.slot)][0]
            assert o.gpa == s.gpa and o.ua == s.ua and o.size in (0, s.size)
        ts = [o.timestamp for o in churn]
        assert ts == sorted(ts)


def test_smm_churn_deletes_ram_in_address_space_1():
    """The case workloads.md §2.5 asks for: AS1 DELETEs of a RAM slot."""
    churn = churn_ops(load_layout("q35-ovmf-smm"))
    as1_ram = [o for o in churn if o.as_id == 1 and o.size == 0 and o.gpa == 0x100000]
    assert len(as1_ram) == 3


GOOD = '''
[layout]
name = "t"
description = "test"
tag = "[G]"
source = "test"

[[slot]]
as_id = 0
slot = 0
role = "ram-low"
gpa = 0x0
size = 0x100000
flags = 0x0
ua = 0x7f0000000000
tag = "[G]"
source = "test"

[[slot]]
as_id = 0
slot = 1
role = "ram-high"
gpa = 0x100000
size = 0x100000
flags = 0x0
ua = 0x7f0000100000
tag = "[G]"
source = "test"
'''


def _write(tmp_path, text):
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


def test_custom_layout_file(tmp_path):
    lay = load_layout(_write(tmp_path, GOOD))
    assert [s.slot for s in lay.slots] == [0, 1]


@pytest.mark.parametrize("old, new, where", [
    ("gpa = 0x100000\n", "gpa = 0x100800\n", r"t\.toml:23: \[slot\[1\]\] field 'gpa': 0x100800 is not"),
    ("role = \"ram-high\"", "role = \"ram-middle\"", r":22: \[slot\[1\]\] field 'role'"),
    ("slot = 1\n", "slot = 0\n", r":21: \[slot\[1\]\] field 'slot': slot 0 of address space 0 "
                                 r"is already used by slot\[0\]"),
    ("gpa = 0x100000\n", "gpa = 0x80000\n", r"slot\[1\]\] field 'gpa': .* overlaps slot\[0\]"),
    ("as_id = 0\nslot = 1", "as_id = 2\nslot = 1", r":20: \[slot\[1\]\] field 'as_id'"),
    ("flags = 0x0\nua = 0x7f0000100000", "flags = 0x4\nua = 0x7f0000100000",
     r"slot\[1\]\] field 'flags': 0x4 has bits"),
    ("tag = \"[G]\"\nsource = \"test\"\n\n[[slot]]\nas_id = 0\nslot = 1",
     "tag = \"[X]\"\nsource = \"test\"\n\n[[slot]]\nas_id = 0\nslot = 1",
     r":16: \[slot\[0\]\] field 'tag'"),
    ("size = 0x100000\nflags = 0x0\nua = 0x7f0000100000",
     "size = \"big\"\nflags = 0x0\nua = 0x7f0000100000", r"slot\[1\]\] field 'size': must be int"),
    ("ua = 0x7f0000100000\n", "ua = 0x7f0000100000\ncolour = 1\n",
     r"slot\[1\]\] field 'colour': unknown field"),
    ("source = \"test\"\n\n[[slot]]\nas_id = 0\nslot = 1", "\n[[slot]]\nas_id = 0\nslot = 1",
     r"slot\[0\]\]: missing field 'source'"),
    # a layout lists live slots: each must pass __kvm_set_memory_region's checks
    ("size = 0x100000\nflags = 0x0\nua = 0x7f0000100000",
     "size = 0x80000000000\nflags = 0x0\nua = 0x7f0000100000",
     r"\[slot\[1\]\] field 'size': 0x80000000000 is more than KVM_MEM_MAX_NR_PAGES"),
    ("gpa = 0x100000\n", "gpa = 0xfffffffffff00000\n", r"field 'size': gpa 0xfffffffffff00000 "
                                                        r"\+ size 0x100000 wraps past 2\^64"),
    ("gpa = 0x100000\n", "gpa = 0x100000000000000000000\n",
     r"field 'gpa': 0x100000000000000000000 is outside 0\.\.18446744073709551615"),
    ("flags = 0x0\nua = 0x7f0000100000", "flags = 0x10000000000\nua = 0x7f0000100000",
     r"field 'flags': 1099511627776 is outside 0\.\.4294967295"),
])
def test_validation_names_file_line_entry_and_field(tmp_path, old, new, where):
    assert old in GOOD
    p = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(LayoutError, match=where):
        load_layout(p)


def test_churn_validation(tmp_path):
    text = GOOD + '''
[[churn]]
name = "x"
roles = ["vgpu-aperture"]
pairs = 1
gap_us = 1
period_us = 1
tag = "[G]"
source = "t"
'''
    with pytest.raises(LayoutError, match=r":32: \[churn\[0\]\] field 'roles': no slot has role"):
        load_layout(_write(tmp_path, text))


def test_unknown_layout_lists_known_ones():
    with pytest.raises(LayoutError, match="known layouts: .*q35-ovmf-smm"):
        load_layout("q35-seabios")


def test_bad_toml(tmp_path):
    with pytest.raises(LayoutError, match="not valid TOML"):
        load_layout(_write(tmp_path, "[layout\n"))



def test_churn_bounds(tmp_path):
    churn = ('\n[[churn]]\nname = "x"\nroles = ["ram-high"]\npairs = {pairs}\ngap_us = {gap}\n'
             'period_us = 1\ntag = "[G]"\nsource = "t"\n')
    with pytest.raises(LayoutError, match=r"field 'pairs': 600000 DELETE/CREATE pairs x 1 slot"
                                          r"\(s\) make the churn 1200000 ops; the limit is"):
        load_layout(_write(tmp_path, GOOD + churn.format(pairs=600000, gap=1)))
    with pytest.raises(LayoutError, match="field 'gap_us': must be a finite number, got nan"):
        load_layout(_write(tmp_path, GOOD + churn.format(pairs=1, gap="nan")))
    with pytest.raises(LayoutError, match="field 'gap_us': 1e\\+300 is outside 0..3600000000"):
        load_layout(_write(tmp_path, GOOD + churn.format(pairs=1, gap="1e300")))
