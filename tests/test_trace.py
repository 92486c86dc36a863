"""kvmpt.workload.trace: every kvm_set_user_memory format of spec/workloads.md §1.7."""
from __future__ import annotations

from pathlib import Path

import pytest

from kvmpt.workload.trace import (MemslotOp, TraceError, load_memslot_csv, load_ops, load_qemu_trace,
                         parse_trace_line, render_trace_line, render_trace_lines)

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces"
SHARED_CSV = TRACES / "qemu_vga_bar_toggle_2020.csv"      # a copy of ../shared/data's
UPSTREAM_CSV = ROOT.parent / "shared" / "data" / "qemu_vga_bar_toggle_2020.csv"
VGA_UA = 0x7fadf6800000


# -- one sample of each format, verbatim from the sources in workloads.md §1.7 ----------

def test_old_slot_format_carries_as_id_in_high_bits():
    op = parse_trace_line("kvm_set_user_memory Slot#65539 flags=0x0 gpa=0x100000 "
                          "size=0xbff00000 ua=0x7fb2a3f00000 ret=0", 7)
    assert (op.as_id, op.slot, op.ioctl_slot) == (1, 3, 65539)
    assert (op.flags, op.gpa, op.size, op.ua, op.ret) == (0, 0x100000, 0xbff00000,
                                                         0x7fb2a3f00000, 0)
    assert op.timestamp is None and op.pid is None and op.lineno == 7
    assert op.guest_memfd is None and op.restricted_fd is None
    assert op.npages == 786176 and op.base_gfn == 0x100


def test_log_prefix_gives_pid_and_timestamp():
    op = parse_trace_line("41874@1587736345.193884:kvm_set_user_memory Slot#3 flags=0x1 "
                          "gpa=0xfd000000 size=0x1000000 ua=0x7fadf6800000 ret=0")
    assert op.pid == 41874
    assert op.timestamp == pytest.approx(1587736345.193884, abs=1e-7)
    assert (op.as_id, op.slot, op.flags) == (0, 3, 1)


def test_addrspace_with_restricted_fields():
    op = parse_trace_line("692500@1689108688.795412:kvm_set_user_memory AddrSpace#0 Slot#0 "
                          "flags=0x0 gpa=0x0 size=0x0 ua=0x7fbf5be00000 ret=0 "
                          "restricted_fd=19 restricted_offset=0x0")
    assert op.is_delete and op.restricted_fd == 19 and op.restricted_offset == 0
    assert op.style == "restricted"


def test_current_guest_memfd_format():
    op = parse_trace_line("kvm_set_user_memory AddrSpace#0 Slot#4 flags=0x2 gpa=0xe0000 "
                          "size=0x20000 ua=0x7f5840de0000 guest_memfd=-1 "
                          "guest_memfd_offset=0x3e0000 ret=0")
    assert op.guest_memfd == -1 and op.guest_memfd_offset == 0x3e0000
    assert op.style == "guest_memfd" and op.flags == 2


def test_failure_ret_is_negative_errno():
    op = parse_trace_line("kvm_set_user_memory AddrSpace#0 Slot#2 flags=0x4 gpa=0xfeda0000 "
                          "size=0x20000 ua=0x7fe1ebfff000 ret=-22")
    assert op.ret == -22 and op.errno == 22


def test_addrspace_one_without_ret():
    op = parse_trace_line("kvm_set_user_memory AddrSpace#1 Slot#9 flags=0x0 gpa=0x100000 "
                          "size=0x1000 ua=0x7f0000000000")
    assert op.ret is None and op.errno is None and op.ioctl_slot == (1 << 16) | 9


# -- skipping and rejecting --------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "",
    "# kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=0",
    "pci_cfg_write i440FX 00:0 @0x58 <- 0x33333000",
    "41874@1587736345.193900:kvm_vm_ioctl type 0x4020ae46, arg 0x7ffd2b9c6a40",
    'kvm_set_user_memory(uint16_t as, uint16_t slot) "AddrSpace#%d Slot#%d"',
    "the kvm_set_user_memory trace shows the VGA BAR toggling",
    "kvm_set_user_memory_region failed",
])
def test_unrelated_lines_are_skipped(line):
    assert parse_trace_line(line) is None


@pytest.mark.parametrize("line, why", [
    ("kvm_set_user_memory Slot#3 flags=0x1 gpa=0xfd000000 size=0x1000000 ret=0",
     "missing field ua"),
    ("kvm_set_user_memory flags=0x1 gpa=0x0 size=0x0 ua=0x0 ret=0", "missing Slot#"),
    ("kvm_set_user_memory Slot#3 flags=0x1 gpa=0xzz size=0x0 ua=0x0 ret=0",
     "gpa: '0xzz' is not a 0x-prefixed hex number"),
    ("kvm_set_user_memory Slot#3 flags=1 gpa=0x0 size=0x0 ua=0x0 ret=0",
     "flags: '1' is not a 0x-prefixed hex number"),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=zero",
     "ret: 'zero' is not a decimal integer"),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=0 color=0x1",
     "color: unknown field"),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 gpa=0x0 size=0x0 ua=0x0",
     "gpa: field appears twice"),
    ("kvm_set_user_memory AddrSpace#0 Slot#70000 flags=0x0 gpa=0x0 size=0x0 ua=0x0",
     "both are 16-bit fields"),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 guest_memfd=-1 "
     "guest_memfd_offset=0x0 ret=0", "need AddrSpace#"),
    ("kvm_set_user_memory AddrSpace#0 Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 "
     "guest_memfd=-1 ret=0", "guest_memfd and guest_memfd_offset come together"),
    ("kvm_set_user_memory Slot#3 AddrSpace#0 flags=0x0 gpa=0x0 size=0x0 ua=0x0",
     "AddrSpace#: must come first"),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=0 garbage",
     "cannot read field 'garbage'"),
    ("kvm_set_user_memory Slot#3 flags=0x100000000 gpa=0x0 size=0x0 ua=0x0",
     "does not fit in 32 bits"),
    ("41874@1587736345.1938:kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0",
     "6 digits of microseconds"),
    # a damaged or mis-cased record is an error, not prose (it would silently vanish)
    ("kvm_set_user_memory SLOT#1 flags=0x0 gpa=0x0 size=0x1000 ua=0x0 ret=0",
     "cannot read field 'SLOT#1'"),
    ("KVM_SET_USER_MEMORY Slot#1 flags=0x0 gpa=0x0 size=0x1000 ua=0x0 ret=0",
     "event name is missing or misspelled"),
    ("kvm_set_user_memry AddrSpace#0 Slot#1 flags=0x0 gpa=0x0 size=0x1000 ua=0x0 ret=0",
     "event name is missing or misspelled"),
    # what a record can hold: ret is 0 or -errno, fds are >= -1, fields fit their type
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=1",
     "ret: 1 is outside -4095..0"),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=-4096",
     "ret: -4096 is outside -4095..0"),
    ("kvm_set_user_memory AddrSpace#0 Slot#3 flags=0x0 gpa=0x0 size=0x0 ua=0x0 "
     "guest_memfd=-2 guest_memfd_offset=0x0 ret=0", "guest_memfd: -2 is outside -1.."),
    ("kvm_set_user_memory Slot#3 flags=0x0 gpa=0x10000000000000000 size=0x0 ua=0x0",
     "gpa: 0x10000000000000000 does not fit in 64 bits"),
    ("99999999@1587736345.193884:kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 size=0x0 "
     "ua=0x0", "pid: 99999999 is outside"),
    ("1@99999999999999999999999.193884:kvm_set_user_memory Slot#3 flags=0x0 gpa=0x0 "
     "size=0x0 ua=0x0", "timestamp: 99999999999999999999999 s is past"),
])
def test_malformed_lines_name_the_line_and_the_problem(line, why):
    text = "unrelated first line\n# a comment\n" + line + "\n"
    with pytest.raises(ValueError) as exc:
        load_qemu_trace(text)
    assert isinstance(exc.value, TraceError)
    assert str(exc.value).startswith("<text>:3: ")
    assert why in str(exc.value)


# -- round trips -------------------------------------------------------------------------

def test_csv_round_trip_through_trace_lines():
    ops = load_memslot_csv(SHARED_CSV, ua=VGA_UA, pid=41874)
    assert len(ops) == 28
    assert [o.size == 0 for o in ops] == [i % 4 < 2 for i in range(28)]
    assert {(o.as_id, o.slot) for o in ops} == {(0, 3), (1, 3)}
    lines = render_trace_lines(ops)
    assert lines[2] == ("41874@1587736345.193884:kvm_set_user_memory Slot#3 flags=0x1 "
                        "gpa=0xfd000000 size=0x1000000 ua=0x7fadf6800000 ret=0")
    assert lines[1].split(":", 1)[1].startswith("kvm_set_user_memory Slot#65539 ")
    back = load_qemu_trace(lines)
    keys = ("as_id", "slot", "flags", "gpa", "size", "ua", "ret", "pid")
    for a, b in zip(ops, back):
        assert [getattr(a, k) for k in keys] == [getattr(b, k) for k in keys]
        assert b.timestamp == pytest.approx(a.timestamp, abs=5e-7)
    # every other style renders and parses back to the same op
    for style in ("addrspace", "guest_memfd", "restricted", "slot"):
        again = load_qemu_trace(render_trace_lines(ops, style=style, prefix=False))
        assert [(o.as_id, o.slot, o.gpa, o.size, o.flags) for o in again] == \
               [(o.as_id, o.slot, o.gpa, o.size, o.flags) for o in ops]


@pytest.mark.skipif(not UPSTREAM_CSV.exists(), reason="../shared/data not present")
def test_csv_copy_is_unchanged():
    assert SHARED_CSV.read_bytes() == UPSTREAM_CSV.read_bytes()


def test_shipped_vga_trace_is_the_csv_rendered():
    ops = load_memslot_csv(SHARED_CSV, ua=VGA_UA, pid=41874)
    shipped = [l for l in (TRACES / "qemu_vga_bar_toggle_2020.trace").read_text().splitlines()
               if not l.startswith("#")]
    assert shipped == render_trace_lines(ops)


def test_format_samples_file():
    ops = load_qemu_trace(TRACES / "format_samples.trace")
    assert [o.style for o in ops] == ["slot", "slot", "addrspace", "addrspace", "restricted",
                                      "guest_memfd", "addrspace"]
    assert [o.ret for o in ops][-1] == -22
    assert sum(o.timestamp is not None for o in ops) == 3
    for o in ops:          # each renders back to its own line
        line = (TRACES / "format_samples.trace").read_text().splitlines()[o.lineno - 1]
        assert render_trace_line(o) == line


@pytest.mark.parametrize("name, n, creates, deletes, as1", [
    ("i440fx_seabios_40g_smm_off.trace", 52, 31, 21, 0),
    ("i440fx_seabios_40g_smm_on.trace", 112, 66, 46, 54),
])
def test_boot_traces_match_workloads_table(name, n, creates, deletes, as1):
    """workloads.md §1.5: 52 ioctls (31 CREATE, 21 DELETE) and 112 (66, 46)."""
    ops = load_qemu_trace(TRACES / name)
    assert len(ops) == n
    assert sum(o.size > 0 for o in ops) == creates
    assert sum(o.size == 0 for o in ops) == deletes
    assert sum(o.as_id == 1 for o in ops) == as1
    assert all(o.ret == 0 for o in ops)


def test_sources_accepted():
    line = ("kvm_set_user_memory AddrSpace#0 Slot#0 flags=0x0 gpa=0x0 size=0x1000 "
            "ua=0x7f0000000000 ret=0")
    assert len(load_qemu_trace(line)) == 1                       # one line as a string
    assert len(load_qemu_trace([line + "\n", "x\n"])) == 1        # iterable of lines
    assert len(load_qemu_trace((line + "\n").encode())) == 1      # bytes
    assert load_ops(SHARED_CSV)[0].tag == "[D]"                   # .csv by suffix
    with pytest.raises(TraceError, match="^/nonexistent/trace.log: no such file$"):
        load_qemu_trace("/nonexistent/trace.log")
    with pytest.raises(TraceError, match="^/nonexistent/x.csv: no such file$"):
        load_ops("/nonexistent/x.csv")


def test_csv_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# c\nunix_ts,as_id,slot,op,gpa_hex,size_hex,flags_hex\n"
                   "1.0,0,3,DELETE,0xfd000000,0x1000,0x0\n")
    with pytest.raises(TraceError, match=rf"^{bad}:3: op: DELETE disagrees"):
        load_memslot_csv(bad)


def test_memslot_op_is_frozen():
    op = MemslotOp(as_id=0, slot=1, flags=0, gpa=0, size=0x1000, ua=0)
    with pytest.raises(Exception):
        op.slot = 2  # type: ignore[misc]
    assert op.replace(slot=2).slot == 2


def test_other_prefixes_are_tolerated_without_a_timestamp():
    body = ("kvm_set_user_memory AddrSpace#0 Slot#1 flags=0x0 gpa=0x100000000 "
            "size=0x180000000 ua=0x7f0080000000 ret=0")
    for prefix in ("> ", "qemu-system-x86-4187 [003] ..... 1234.567890: tracing_mark_write: ",
                   "   "):
        op = parse_trace_line(prefix + body)
        assert op is not None and op.timestamp is None and op.size == 0x180000000


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(as_id=st.integers(0, 1), slot=st.integers(0, 0xFFFF), flags=st.integers(0, 7),
       gpa=st.integers(0, (1 << 52) - 1), size=st.integers(0, (1 << 43)),
       ua=st.integers(0, (1 << 47) - 1), ret=st.one_of(st.none(), st.integers(-133, 0)),
       ts_us=st.one_of(st.none(), st.integers(0, 2_000_000_000 * 10**6)),
       pid=st.integers(1, 4_000_000),
       style=st.sampled_from(["slot", "addrspace", "restricted", "guest_memfd"]))
def test_render_parse_round_trip(as_id, slot, flags, gpa, size, ua, ret, ts_us, pid, style):
    op = MemslotOp(as_id=as_id, slot=slot, flags=flags, gpa=gpa, size=size, ua=ua, ret=ret,
                   timestamp=None if ts_us is None else ts_us / 1e6,
                   pid=None if ts_us is None else pid,
                   guest_memfd=-1 if style == "guest_memfd" else None,
                   guest_memfd_offset=0x2000 if style == "guest_memfd" else None,
                   restricted_fd=5 if style == "restricted" else None,
                   restricted_offset=0 if style == "restricted" else None, style=style)
    if style == "restricted" and ret is None:
        return          # that format always printed ret= before the restricted fields
    back = parse_trace_line(render_trace_line(op), 1)
    for k in ("as_id", "slot", "flags", "gpa", "size", "ua", "ret", "pid", "guest_memfd",
              "guest_memfd_offset", "restricted_fd", "restricted_offset", "style"):
        assert getattr(back, k) == getattr(op, k), k
    if ts_us is not None:
        assert round(back.timestamp * 1e6) == ts_us


def test_bom_crlf_and_prose_count(tmp_path):
    """A BOM no longer hides the first record; CRLF is read; prose lines are counted."""
    line = ("kvm_set_user_memory AddrSpace#0 Slot#0 flags=0x0 gpa=0x0 size=0x1000 "
            "ua=0x7f0000000000 ret=0")
    p = tmp_path / "bom.trace"
    p.write_bytes(b"\xef\xbb\xbf" + (line + "\r\nthe kvm_set_user_memory event\r\n"
                                     + line.replace("Slot#0", "Slot#1")).encode())
    ops = load_qemu_trace(p)
    assert [o.slot for o in ops] == [0, 1]
    assert ops.prose_lines == [2] and ops.source == str(p)


def test_public_names_survive_the_split():
    """kvmpt.workload.trace is a package; its names, and the kvmpt.trace alias, stay."""
    import kvmpt.trace
    import kvmpt.workload.trace as trace
    assert kvmpt.trace is trace
    from kvmpt.trace import MemslotOp as M, TraceError as E, load_qemu_trace as L, \
        parse_trace_line as P
    assert (M, E, L, P) == (MemslotOp, TraceError, load_qemu_trace, parse_trace_line)
    for name in trace.__all__ + ["STYLES", "STYLE_SLOT", "MAX_ERRNO", "KVM_MEM_READONLY"]:
        assert hasattr(trace, name), name
    assert MemslotOp(0, 1, 0, 0x100000, 0x200000, 0).npages == 0x200


def test_misaligned_rejected_requests_are_trace_content():
    """The importer checks what a record can be, not what the kernel accepts."""
    op = parse_trace_line("kvm_set_user_memory AddrSpace#0 Slot#2 flags=0x4 gpa=0xfeda0800 "
                          "size=0x20000 ua=0x7fe1ebfff000 ret=-22")
    assert op.gpa == 0xfeda0800 and op.ret == -22


@pytest.mark.parametrize("row, why", [
    ("1.0,0,3,CREATE,-0x1000,0x1000,0x0", "gpa: '-0x1000' is not a 0x-prefixed hex number"),
    ("1.0,0,3,CREATE,0x0,0x100000000000000000000,0x0", "size: 0x100000000000000000000 does not"),
    ("1.0,0,3,CREATE,0x0,0x1000,0x10000000000", "flags: 0x10000000000 does not fit in 32"),
    ("nan,0,3,CREATE,0x0,0x1000,0x0", "unix_ts: nan is outside"),
    ("1.0,0,70000,CREATE,0x0,0x1000,0x0", "slot: '70000' is not a 16-bit field"),
    ('1.0,0,3,"CREATE,0x0,0x1000,0x0', "expected 7 columns"),
])
def test_csv_rejects_nonsense(tmp_path, row, why):
    p = tmp_path / "x.csv"
    p.write_text("unix_ts,as_id,slot,op,gpa_hex,size_hex,flags_hex\n" + row + "\n")
    with pytest.raises(TraceError) as e:
        load_memslot_csv(p)
    assert str(e.value).startswith(f"{p}:2: ") and why in str(e.value)


def test_csv_decode_error_names_file_and_line(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"unix_ts,as_id,slot,op,gpa_hex,size_hex,flags_hex\n1.0,0,3,\xff\n")
    with pytest.raises(TraceError, match=rf"^{p}:2: not valid UTF-8 \(byte 0xff at column 9"):
        load_memslot_csv(p)
