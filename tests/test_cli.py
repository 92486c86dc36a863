"""The ``kvmpt`` command line: help, dispatch, one-line errors, replay output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kvmpt.cli.replay as replay_mod
from kvmpt import cli

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces"
VGA = str(TRACES / "qemu_vga_bar_toggle_2020.trace")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_top_level_help_lists_every_subcommand(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for name in cli.SUBCOMMANDS:
        assert name in out
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("kvmpt ")


def test_no_command_prints_help_and_fails(capsys):
    rc, out, _ = run(capsys)
    assert rc == 2 and "COMMAND" in out


def test_every_replay_option_is_documented(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.help == "==SUPPRESS==":
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    rc, out, _ = run(capsys, "replay", "--help")
    assert rc == 0
    for opt in ("--design", "--kvmgt", "--tracked", "--track-after", "--layout", "--no-infer",
                "--seed", "--format", "--ops", "--list-layouts", "--quiet", "TRACE"):
        assert opt in out


@pytest.mark.parametrize("argv, fragment", [
    (["replay", "/nonexistent/trace.log"], "no such file"),
    (["replay"], "needs a TRACE"),
    (["replay", VGA, "--design", "v7.0"], "unknown design 'v7.0'"),
    (["replay", VGA, "--design", "hook=sideways"], "slot_hook='sideways'"),
    (["replay", VGA, "--tracked", "-3"], "--tracked must be >= 0"),
    (["replay", VGA, "--tracked", "many"], "invalid int value"),
    (["replay", "layout:nope"], "unknown layout 'nope'"),
    (["replay", VGA, "--frobnicate"], "unrecognized arguments"),
    (["replay", VGA, "--format", "pdf"], "invalid choice"),
])
def test_bad_input_is_one_line_and_nonzero(capsys, argv, fragment):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err


def test_malformed_trace_names_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_text("qemu starting\n"
                   "kvm_set_user_memory Slot#3 flags=0x1 gpa=0xfd000000 size=0x1000000\n")
    rc, _, err = run(capsys, "replay", str(bad))
    assert rc == 2
    assert err == f"kvmpt: error: {bad}:2: missing field ua\n"


def test_empty_trace_is_an_error(capsys, tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    rc, _, err = run(capsys, "replay", str(empty))
    assert rc == 2 and "no kvm_set_user_memory lines" in err


def test_internal_errors_are_one_line_too(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("model exploded\nsecond line")
    monkeypatch.setattr(replay_mod, "run", boom)
    rc, _, err = run(capsys, "replay", VGA)
    assert rc == 1
    assert err.count("\n") == 1 and "internal error: RuntimeError: model exploded" in err


def test_replay_text(capsys):
    rc, out, err = run(capsys, "replay", VGA, "--quiet")
    assert rc == 0 and err == ""
    assert "design:   v6.5, v6.6" in out
    assert "scenario: qemu_vga_bar_toggle_2020.trace" in out
    assert "14 ok / 14" in out and "+ 2 inferred" in out
    assert max(len(l) for l in out.splitlines()) < 80


def test_replay_json_and_csv(capsys):
    rc, out, _ = run(capsys, "replay", str(TRACES / "qemu_vga_bar_toggle_2020.csv"),
                     "--format", "json", "--design", "v6.6")
    assert rc == 0
    doc = json.loads(out)
    assert [r["design"] for r in doc["results"]] == ["v6.6"]
    assert doc["results"][0]["counts"]["DELETE"] == 14


def test_replay_layout_churn_with_tracked_set(capsys):
    rc, out, _ = run(capsys, "replay", "layout:q35-ovmf-smm", "--tracked", "500",
                     "--seed", "3", "-q")
    assert rc == 0
    assert "scenario: layout q35-ovmf-smm + boot churn" in out
    assert "tracked:  500 gfns in AS0 RAM, placed after op 0" in out
    assert "seed:     3" in out
    assert "track_remove_region" in out


def test_replay_on_a_layout(capsys):
    rc, out, _ = run(capsys, "replay", str(TRACES / "i440fx_seabios_40g_smm_on.trace"),
                     "--layout", "q35-ovmf", "--design", "v6.6", "-q")
    assert rc == 0      # the trace fights the layout: EEXIST mismatches are reported
    assert "errno mismatches (model vs trace)" in out


def test_design_knobs(capsys):
    rc, out, _ = run(capsys, "replay", VGA, "-q", "--design",
                     "slot_hook=flush,move=reject,kvmgt_lock=vgpu_lock,drop=0")
    assert rc == 0 and "design:   flush/reject-move/vgpu_lock/keep" in out


def test_list_layouts(capsys):
    rc, out, _ = run(capsys, "replay", "--list-layouts")
    assert rc == 0 and "q35-ovmf-smm" in out and "i440fx-seabios" in out


def test_as_a_process():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "kvmpt.cli", "replay", "--help"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "--tracked" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "kvmpt.cli", "replay", "/no/such/trace"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["kvmpt: error: /no/such/trace: no such file"]


def test_real_model_replay(capsys):
    rc, out, err = run(capsys, "replay", str(TRACES / "i440fx_seabios_40g_smm_on.trace"),
                       "--kvmgt", "-q")
    assert rc == 0, err
    assert "66 ok / 66" in out and "46 ok / 46" in out
    rc, out, err = run(capsys, "replay", "layout:q35-ovmf-smm", "--tracked", "2000", "-q")
    assert rc == 0, err
    assert max(len(l) for l in out.splitlines()) < 80


def test_out_file(capsys, tmp_path):
    dest = tmp_path / "report.txt"
    rc, out, err = run(capsys, "replay", VGA, "--out", str(dest))
    assert rc == 0 and out == "" and "wrote" in err
    assert dest.read_text().startswith("Memslot trace replay")
    rc, _, err = run(capsys, "replay", VGA, "--out", str(tmp_path / "no" / "dir.txt"))
    assert rc == 2 and err.count("\n") == 1 and "No such file or directory" in err


# -- the text-report building blocks --------------------------------------------------------

def test_units():
    from kvmpt.infra.text import fmt_bytes, fmt_count, fmt_cycles, fmt_errno, fmt_pages
    assert fmt_bytes(0x7ef00000) == "2,031 MiB" and fmt_bytes(0x940000000) == "37 GiB"
    assert fmt_bytes(0xa0000) == "640 KiB" and fmt_bytes(100) == "100 B"
    assert fmt_pages(786176) == "786,176 pages" and fmt_pages(1) == "1 page"
    assert fmt_cycles(None) == "n/a" and fmt_cycles(850) == "850 cycles"
    assert fmt_cycles(4.56e6) == "4.56 Mcycles"
    assert fmt_count(1234567) == "1,234,567" and fmt_count(None) == "-"
    assert fmt_errno(22) == "EINVAL" and fmt_errno(0) == "0" and fmt_errno(None) == "-"


def test_header_and_table_width():
    from kvmpt.infra.text import MAX_WIDTH, header, render_document, table
    h = header("A very long title " * 8, design="v6.6", scenario="s " * 60, seed=4)
    assert all(len(l) <= MAX_WIDTH for l in h.splitlines())
    assert "kvmpt " in h.splitlines()[0] and "seed:     4" in h
    t = table(["name", "value"], [("x" * 120, "1 MiB"), ("y", "2 MiB")])
    assert all(len(l) <= MAX_WIDTH for l in t.splitlines())
    assert t.splitlines()[2].endswith("1 MiB") and ".." in t
    with pytest.raises(ValueError):
        table(["a", "b"], [("only one",)])
    doc = render_document(h, [("Section", t)])
    assert doc.endswith("\n") and "\n\nSection\n" in doc
    with pytest.raises(AssertionError, match="columns"):
        render_document(h, [("wide", "z" * 100)])
    # a terminal listing (max_width=None) keeps every character, and aligns the same way
    wide = table(["name", "value"], [("x" * 120, "1 MiB"), ("y", "2 MiB")], max_width=None)
    lines = wide.splitlines()
    assert lines[2] == "x" * 120 + "  1 MiB" and lines[3] == "y" + " " * 121 + "2 MiB"
    assert lines[1] == "-" * len(lines[2])


def test_list_layouts_is_a_table(capsys):
    from kvmpt.workload.layouts import layout_names, load_layout
    rc, out, _ = run(capsys, "replay", "--list-layouts")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["layout", "description"]
    assert set(lines[1]) == {"-"}
    for name, line in zip(layout_names(), lines[2:]):
        assert line.split()[0] == name and line.endswith(load_layout(name).description)


def test_a_broken_subcommand_only_breaks_itself(capsys, monkeypatch, tmp_path):
    (tmp_path / "kvmpt_broken_sub.py").write_text("raise RuntimeError('half-written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", ("kvmpt_broken_sub", "a broken command"))
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "broken" in out
    rc, out, err = run(capsys, "broken", "x")      # a bug in the module: one line, status 1
    assert rc == 1 and err.count("\n") == 1
    assert "cannot set up the command line: half-written" in err
    rc, out, _ = run(capsys, "replay", "--list-layouts")
    assert rc == 0


def test_replay_does_not_import_other_subcommands():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys; from kvmpt.cli import main; main(['replay', '--list-layouts']); "
            "print(sorted(m for m in sys.modules if m in ('kvmpt.sweep', 'kvmpt.review.report', "
            "'kvmpt.bench')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "[]"


def test_replay_says_how_many_prose_lines_it_skipped(capsys, tmp_path):
    trace = tmp_path / "prose.trace"
    trace.write_text("kvm_set_user_memory is the event we trace\n"
                     "kvm_set_user_memory AddrSpace#0 Slot#0 flags=0x0 gpa=0x0 size=0x100000 "
                     "ua=0x7f0000000000 ret=0\n")
    rc, out, err = run(capsys, "replay", str(trace), "-q")
    assert rc == 0, err
    assert "skipped 1 line(s)" in err and "(lines 1)" in err
    assert "1 ok / 1" in out
