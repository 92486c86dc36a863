"""A mutation fuzzer for kvmpt's input files: hostile-but-fair edits of the shipped data.

Each input format (:data:`FORMATS`) has a seed file from ``data/``, the loader the
command line uses, the loader's error type and a check of what a loaded object may be.
:func:`mutate` applies 1..3 edits a hostile-but-fair user makes -- truncated lines,
swapped fields, non-numbers, huge / negative / non-finite numbers, unknown and duplicate
keys, wrong types, binary garbage, an empty file, CRLF, a UTF-8 BOM, a misspelled or
mis-cased name -- and :func:`classify` runs the loader on the result:

``"loaded"``     loaded, and the object passed the format's check;
``"rejected"``   raised the loader's error, naming the file and a line or field;
``"nonsense"``   loaded, but the object fails the check (nonsense accepted);
``"unlocated"``  raised the loader's error without naming the file and a line or field;
``"uncaught"``   raised any other exception;
``"hang"``       ran longer than the time limit.

Deterministic: a mutant is a function of (format, seed).  ``tests/test_fuzz_inputs.py``
runs a few dozen per format; ``benchmarks/fuzz_inputs.py`` runs hundreds.
"""
from __future__ import annotations

import math
import random
import re
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

# ---------------------------------------------------------------------------
# Edits

_NASTY_NUMBERS = ["abc", "0x", "-1", "-0x1000", str(2**80), hex(2**80), str(2**1100), "1e999",
                  "-1e999", "nan", "inf", "-inf", "1.5", "0", "true", '"7"', "[1]", "{}",
                  "0x1001", "99999999999999999999", "-4096", "1_000", "", "0b101", "1e308"]
_NASTY_TOKENS = ["bogus = 1", "seed = 3", "design = \"v6.6\"", "[unknown]", "[[slot]]",
                 "[params]", "x = [[[[[[[[[[[[1]]]]]]]]]]]]", "a = " + "[" * 2000,
                 "SLOT#1", "Slot#99999999999", "ret=1", "guest_memfd=-7", "flags=0x1ffffffff",
                 "kvm_set_user_memory", "kvm_set_user_memory Slot#1",
                 "KVM_SET_USER_MEMORY Slot#1 flags=0x0 gpa=0x0 size=0x1000 ua=0x0 ret=0"]
_GARBAGE = [b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\xc3\x28", b"\r", b"\x1b[31m", b"\t",
            "\u2028".encode(), "é".encode(), b"\xed\xa0\x80"]
_NUMBER = re.compile(rb"-?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)")
_TOKEN = re.compile(rb"[A-Za-z_][A-Za-z0-9_#\-]*")


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _pick_line(lines: list[bytes], rnd: random.Random) -> int:
    # prefer lines with content (not comments) so edits hit the data
    good = [i for i, l in enumerate(lines) if l.strip() and not l.lstrip().startswith(b"#")]
    return rnd.choice(good) if good else rnd.randrange(len(lines))


def e_truncate_line(data, rnd):
    lines = _lines(data)
    i = _pick_line(lines, rnd)
    lines[i] = lines[i][:rnd.randrange(len(lines[i]) + 1)]
    return b"\n".join(lines)


def e_truncate_file(data, rnd):
    return data[:rnd.randrange(len(data) + 1)]


def e_delete_line(data, rnd):
    lines = _lines(data)
    del lines[_pick_line(lines, rnd)]
    return b"\n".join(lines)


def e_duplicate_line(data, rnd):
    lines = _lines(data)
    i = _pick_line(lines, rnd)
    lines.insert(i + rnd.choice([0, 1, 2]), lines[i])
    return b"\n".join(lines)


def e_swap_lines(data, rnd):
    lines = _lines(data)
    i, j = _pick_line(lines, rnd), _pick_line(lines, rnd)
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def e_swap_fields(data, rnd):
    lines = _lines(data)
    i = _pick_line(lines, rnd)
    sep = b"," if lines[i].count(b",") >= 2 else b" "
    parts = lines[i].split(sep)
    if len(parts) >= 2:
        a, b = rnd.randrange(len(parts)), rnd.randrange(len(parts))
        parts[a], parts[b] = parts[b], parts[a]
        # also swap a TOML value with another line's value
    lines[i] = sep.join(parts)
    return b"\n".join(lines)


def e_swap_values(data, rnd):
    lines = _lines(data)
    eq = [i for i, l in enumerate(lines) if b"=" in l and not l.lstrip().startswith(b"#")]
    if len(eq) < 2:
        return e_swap_fields(data, rnd)
    i, j = rnd.sample(eq, 2)
    ki, vi = lines[i].split(b"=", 1)
    kj, vj = lines[j].split(b"=", 1)
    lines[i], lines[j] = ki + b"=" + vj, kj + b"=" + vi
    return b"\n".join(lines)


def e_number(data, rnd):
    nums = list(_NUMBER.finditer(data))
    if not nums:
        return e_insert_token(data, rnd)
    m = rnd.choice(nums)
    new = rnd.choice(_NASTY_NUMBERS).encode()
    if m.group(0).startswith((b"0x", b"0X", b"-0x")) and rnd.random() < 0.5:
        new = rnd.choice([hex(2**64), hex(2**80), "0x-1", "0xzz", hex(2**32), "0x0",
                          hex(rnd.randrange(2**70))]).encode()
    return data[:m.start()] + new + data[m.end():]


def e_token(data, rnd):
    toks = list(_TOKEN.finditer(data))
    if not toks:
        return e_insert_token(data, rnd)
    m = rnd.choice(toks)
    t = m.group(0)
    new = rnd.choice([t.upper(), t.lower(), t[:-1], t + b"x", t[::-1], b"", t.swapcase()])
    return data[:m.start()] + new + data[m.end():]


def e_insert_token(data, rnd):
    lines = _lines(data)
    i = rnd.randrange(len(lines) + 1)
    tok = rnd.choice(_NASTY_TOKENS).encode()
    if rnd.random() < 0.5 and i < len(lines):
        lines[i] = lines[i] + b" " + tok
    else:
        lines.insert(i, tok)
    return b"\n".join(lines)


def e_wrong_type(data, rnd):
    lines = _lines(data)
    eq = [i for i, l in enumerate(lines) if b"=" in l and not l.lstrip().startswith(b"#")]
    if not eq:
        return e_number(data, rnd)
    i = rnd.choice(eq)
    k, _ = lines[i].split(b"=", 1)
    v = rnd.choice([b' "text"', b" 1", b" 1.5", b" true", b" [1, 2]", b" [[1]]", b" {}",
                    b' { value = 1 }', b" nan", b" inf", b" []", b' ["a", 1]', b" -1",
                    b" 1979-05-27", b" " + str(2**80).encode()])
    lines[i] = k + b"=" + v
    return b"\n".join(lines)


def e_garbage(data, rnd):
    i = rnd.randrange(len(data) + 1)
    g = rnd.choice(_GARBAGE) if rnd.random() < 0.7 else bytes(rnd.randrange(256)
                                                                for _ in range(rnd.randrange(1, 9)))
    return data[:i] + g + data[i:]


def e_empty(data, rnd):
    return rnd.choice([b"", b"\n", b"\xef\xbb\xbf", b"   \n\n", b"#\n"])


def e_crlf(data, rnd):
    return data.replace(b"\n", b"\r\n")


def e_bom(data, rnd):
    return b"\xef\xbb\xbf" + data


EDITS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    e_truncate_line, e_truncate_file, e_delete_line, e_duplicate_line, e_swap_lines,
    e_swap_fields, e_swap_values, e_number, e_number, e_number, e_token, e_insert_token,
    e_wrong_type, e_wrong_type, e_garbage, e_empty, e_crlf, e_bom)


def mutate(data: bytes, seed: int) -> bytes:
    """1..3 edits of ``data``, chosen by ``seed`` (the same seed, the same mutant)."""
    rnd = random.Random(seed)
    for _ in range(rnd.choice([1, 1, 1, 2, 2, 3])):
        data = rnd.choice(EDITS)(data, rnd)
    return data


# ---------------------------------------------------------------------------
# Formats: seed file, loader, error type, what a loaded object may be

def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in xs)


def _check_ops(ops, source_text: str | None = None) -> str | None:
    from kvmpt.kernel.memslot import U32_MAX, U64_MAX
    for op in ops:
        if not (0 <= op.as_id <= 0xFFFF and 0 <= op.slot <= 0xFFFF):
            return f"as_id/slot out of range: {op}"
        if not (0 <= op.flags <= U32_MAX and all(0 <= v <= U64_MAX
                                                for v in (op.gpa, op.size, op.ua))):
            return f"field out of range: {op!r}"
        if op.ret is not None and not -4095 <= op.ret <= 0:
            return f"ret out of range: {op.ret}"
        if op.timestamp is not None and not (_finite(op.timestamp) and op.timestamp >= 0):
            return f"bad timestamp {op.timestamp}"
        for fd in (op.guest_memfd, op.restricted_fd):
            if fd is not None and fd < -1:
                return f"negative fd {fd}"
    return None


_RECORDISH = re.compile(r"(?i)slot#\d")
_FIELDISH = re.compile(r"(?i)\b(?:gpa|size|flags|ua)=")


def _trace_check(ops, path: Path) -> str | None:
    why = _check_ops(ops)
    if why:
        return why
    # no silent loss: every line with a Slot# and a field became an op (or was an error)
    text = path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
    text = text.replace("\r", "\n").lstrip("\ufeff")
    expected = sum(1 for line in text.split("\n")
                   if not line.lstrip().startswith("#") and _RECORDISH.search(line)
                   and _FIELDISH.search(line))
    if len(ops) != expected:
        return f"{expected} record-like lines but {len(ops)} ops (silent loss)"
    return None


def _csv_check(ops, path: Path) -> str | None:
    why = _check_ops(ops)
    if why:
        return why
    text = path.read_bytes().decode("utf-8", "replace").replace("\r", "\n").lstrip("\ufeff")
    rows = [l for l in text.split("\n") if l.strip() and not l.lstrip().startswith("#")]
    if len(ops) != len(rows) - 1:
        return f"{len(rows) - 1} rows but {len(ops)} ops (silent loss)"
    return None


def _layout_check(lay, path) -> str | None:
    from kvmpt.workload.layouts import MAX_CHURN_OPS, layout_ops
    from kvmpt.kernel.memslot import KVM_MEM_MAX_NR_PAGES, U64_MAX
    for s in lay.slots:
        if s.gpa % 4096 or s.size % 4096 or s.ua % 4096 or s.size == 0:
            return f"unaligned or empty slot {s}"
        if s.gpa + s.size > U64_MAX or s.size // 4096 > KVM_MEM_MAX_NR_PAGES:
            return f"slot too big {s}"
    for c in lay.churn:
        if not _finite(c.gap_us, c.period_us) or c.gap_us < 0 or c.period_us < 0:
            return f"bad churn times {c}"
    ops = layout_ops(lay, churn=True)
    if len(ops) > len(lay.slots) + MAX_CHURN_OPS:
        return f"{len(ops)} ops"
    return _check_ops(ops)


def _costs_check(cm, path) -> str | None:
    if not (_finite(cm.ghz) and cm.ghz > 0):
        return f"clock {cm.ghz}"
    for c in cm.costs.values():
        if not (_finite(c.cycles, c.low, c.high) and 0 <= c.low <= c.cycles <= c.high):
            return f"cost {c}"
        if len(set(c.counts)) != len(c.counts):
            return f"counter listed twice in {c.name}"
    return None


def _scenario_check(sc, path) -> str | None:
    from kvmpt.workload.scenario.definition import _validate
    _validate(sc)                 # raises if the loaded scenario is not valid
    for name, fig in sc.figures.items():
        if not _finite(fig.value) or any(v is not None and not _finite(v)
                                         for v in (fig.low, fig.high)):
            return f"figure {name} not finite: {fig}"
    sc.layout_obj()
    return None


def _grid_check(res, path) -> str | None:
    from kvmpt.sweep import MAX_RUNS, SEED_MAX
    grid, base = res
    if len(grid) > MAX_RUNS:
        return f"{len(grid)} runs"
    if not all(isinstance(s, int) and 0 <= s <= SEED_MAX for s in grid.seeds):
        return f"seeds {grid.seeds}"
    for name, vals in grid.params:
        if any(isinstance(v, float) and not math.isfinite(v) for v in vals):
            return f"param {name} {vals}"
    return None


def _load_trace(p):
    from kvmpt.workload.trace import load_qemu_trace
    return load_qemu_trace(p)


def _load_csv(p):
    from kvmpt.workload.trace import load_ops
    return load_ops(p)


def _load_layout(p):
    from kvmpt.workload.layouts import load_layout
    return load_layout(p)


def _load_costs(p):
    from kvmpt.workload.costs import load_costs
    return load_costs(p)


def _load_scenario(p):
    from kvmpt.workload.scenario import load_scenario
    return load_scenario(p)


def _load_grid(p):
    """What ``kvmpt sweep --grid P --dry-run`` does before printing."""
    from kvmpt.sweep import plan
    from kvmpt.cli.sweep import _grid_from_args
    args = SimpleNamespace(grid=str(p), param=[], designs=None, seeds=None, scenario=None)
    grid, scenario = _grid_from_args(args)
    base, _, _ = plan(grid, scenario, expand=False)
    return grid, base


def _errors():
    from kvmpt.workload.costs import CostError
    from kvmpt.workload.layouts import LayoutError
    from kvmpt.workload.scenario import ScenarioError
    from kvmpt.sweep import GridError
    from kvmpt.workload.trace import TraceError
    return {"trace": TraceError, "csv": TraceError, "layout": LayoutError, "costs": CostError,
            "scenario": ScenarioError, "grid": GridError}


@dataclass(frozen=True)
class Format:
    name: str
    seeds: tuple[Path, ...]        # files mutants are made from
    load: Callable[[Path], Any]
    check: Callable[[Any, Path], str | None]

    @property
    def error(self) -> type:
        return _errors()[self.name]


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("trace", (DATA / "traces" / "format_samples.trace",
                     DATA / "traces" / "i440fx_seabios_40g_smm_on.trace"),
           _load_trace, _trace_check),
    Format("csv", (DATA / "traces" / "qemu_vga_bar_toggle_2020.csv",), _load_csv, _csv_check),
    Format("layout", (DATA / "layouts" / "q35-ovmf-smm.toml",
                      DATA / "layouts" / "i440fx-seabios.toml"), _load_layout, _layout_check),
    Format("costs", (DATA / "costs.toml",), _load_costs, _costs_check),
    Format("scenario", (DATA / "scenarios" / "q35-desktop.toml",
                        DATA / "scenarios" / "q35-adversarial.toml"),
           _load_scenario, _scenario_check),
    Format("grid", (DATA / "sweeps" / "small.toml",), _load_grid, _grid_check),
)}


# ---------------------------------------------------------------------------
# Running one mutant

class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`Hang` in this (main) thread after ``seconds``."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def located(msg: str, path: Path) -> bool:
    """Whether an error message names the file and a line or a field."""
    p = str(path)
    if not msg.startswith(p):
        return False
    rest = msg[len(p):]
    return bool(re.match(r":\d+:", rest)) or "field" in rest or "[" in rest or "'" in rest \
        or bool(re.match(r": [A-Za-z_#]+: ", rest)) or rest.startswith((": no such file",
                                                                         ": not valid"))


def classify(fmt: Format, data: bytes, directory: Path, name: str,
             limit_s: float = 10.0) -> tuple[str, str]:
    """Write ``data`` as ``directory/name`` and load it: (outcome, detail)."""
    path = directory / name
    path.write_bytes(data)
    try:
        with time_limit(limit_s):
            obj = fmt.load(path)
            why = fmt.check(obj, path)
    except Hang as exc:
        return "hang", str(exc)
    except fmt.error as exc:
        msg = str(exc)
        return ("rejected" if located(msg, path) else "unlocated"), msg
    except Exception as exc:   # noqa: BLE001 - what the fuzzer is looking for
        return "uncaught", f"{type(exc).__name__}: {exc}"
    if why:
        return "nonsense", why
    return "loaded", ""


def mutant(fmt: Format, seed: int) -> tuple[bytes, str]:
    """The mutant ``seed`` of format ``fmt``: (bytes, file name to write it under)."""
    src = fmt.seeds[seed % len(fmt.seeds)]
    return mutate(src.read_bytes(), seed), src.name


def run(fmt: Format, seeds, limit_s: float = 10.0) -> dict[str, list[tuple[int, str]]]:
    """Classify the mutants ``seeds`` of ``fmt``: outcome -> [(seed, detail)]."""
    out: dict[str, list[tuple[int, str]]] = {}
    with tempfile.TemporaryDirectory(prefix=f"kvmpt-fuzz-{fmt.name}-") as d:
        for seed in seeds:
            data, name = mutant(fmt, seed)
            sub = Path(d) / str(seed)
            sub.mkdir()
            outcome, detail = classify(fmt, data, sub, name, limit_s)
            out.setdefault(outcome, []).append((seed, detail))
    return out


BAD = ("nonsense", "unlocated", "uncaught", "hang")
