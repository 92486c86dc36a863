"""Hostile input: every loader either loads a valid object or raises its own error naming the
file and a line or field -- never another exception, never a hang, never nonsense accepted.

Three layers, all driven by ``tests/mutants.py`` (the fuzzer, shared with
``benchmarks/fuzz_inputs.py``, which runs it at full size):

* a fixed mutation run: 40 mutants of each format's shipped data file;
* Hypothesis properties: random mutants, and arbitrary bytes, for each format;
* ``tests/corpus/``: the nastiest cases found, each with its expected outcome.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mutants  # noqa: E402

FORMATS = list(mutants.FORMATS)
CORPUS = HERE / "corpus"
#: mutants per format in the fixed run (the benchmark script runs hundreds)
SMALL_RUN = 40
_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _assert_good(fmt, outcome, detail, what):
    assert outcome not in mutants.BAD, f"{fmt.name} {what}: {outcome}: {detail}"


@pytest.mark.parametrize("name", FORMATS)
def test_mutation_run_small(name):
    fmt = mutants.FORMATS[name]
    res = mutants.run(fmt, range(SMALL_RUN))
    bad = {k: v for k, v in res.items() if k in mutants.BAD}
    assert not bad, f"{name}: {bad}"
    # the run exercised both sides: some mutants load, most are rejected with a location
    assert res.get("rejected") and sum(map(len, res.values())) == SMALL_RUN


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=25, **_SETTINGS)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_mutant_loads_or_is_located(name, seed):
    fmt = mutants.FORMATS[name]
    data, fname = mutants.mutant(fmt, seed)
    with tempfile.TemporaryDirectory() as d:
        outcome, detail = mutants.classify(fmt, data, Path(d), fname)
    _assert_good(fmt, outcome, detail, f"mutant {seed}")


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=25, **_SETTINGS)
@given(data=st.one_of(st.binary(max_size=600),
                      st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_bytes_load_or_are_located(name, data):
    fmt = mutants.FORMATS[name]
    with tempfile.TemporaryDirectory() as d:
        outcome, detail = mutants.classify(fmt, data, Path(d), fmt.seeds[0].name)
    _assert_good(fmt, outcome, detail, f"bytes {data[:60]!r}")


# ---------------------------------------------------------------------------
# The corpus: file -> (format, expected error fragment, or None if it loads)

EXPECT = {
    "trace_bom_crlf.trace": ("trace", None),
    "trace_miscased_slot.trace": ("trace", ":3: cannot read field 'SLOT#1'"),
    "trace_misspelled_event.trace": ("trace", ":2: looks like a kvm_set_user_memory record"),
    "trace_ret_positive.trace": ("trace", ":1: ret: 5 is outside -4095..0"),
    "trace_negative_fd.trace": ("trace", ":1: guest_memfd: -5 is outside -1.."),
    "trace_binary_garbage.trace": ("trace", None),
    "trace_prose.trace": ("trace", None),
    "csv_negative_gpa.csv": ("csv", ":2: gpa: '-0x1000' is not a 0x-prefixed hex number"),
    "csv_nan_timestamp.csv": ("csv", ":2: unix_ts: nan is outside"),
    "csv_size_2_80.csv": ("csv", ":2: size: 0x100000000000000000000 does not fit in 64 bits"),
    "csv_flags_2_40.csv": ("csv", ":2: flags: 0x10000000000 does not fit in 32 bits"),
    "csv_empty.csv": ("csv", ":1: CSV has no header line"),
    "csv_bad_utf8.csv": ("csv", ":2: not valid UTF-8 (byte 0xff at column 11"),
    "layout_pairs_1e9.toml": ("layout", "field 'pairs': 1000000000 DELETE/CREATE pairs x 1 "
                                        "slot(s) make the churn 2000000000 ops; the limit is "
                                        "1000000"),
    "layout_gap_nan.toml": ("layout", "field 'gap_us': must be a finite number, got nan"),
    "layout_period_inf.toml": ("layout", "field 'period_us': must be a finite number, got inf"),
    "layout_size_2_80.toml": ("layout", "field 'size': 0x100000000000000000000 is outside "
                                        "0..18446744073709551615"),
    "layout_bom_crlf.toml": ("layout", None),
    "layout_deep_nesting.toml": ("layout", ": not valid TOML: arrays or tables nested too "
                                           "deeply"),
    "costs_counter_twice.toml": ("costs", "[primitive.zap] field 'counts': 'zaps' is listed "
                                          "twice"),
    "costs_overflow.toml": ("costs", "field 'cycles': 0x"),
    "scenario-nan-low.toml": ("scenario", "[writes] field 'write_rate': 'low' must be a finite "
                                          "number, got nan"),
    "scenario-inf-high.toml": ("scenario", "[tracking] field 'tracked_gfns': 'high' must be a "
                                           "finite number, got inf"),
    "scenario-seed-negative.toml": ("scenario", "[scenario] field 'seed': -1 is outside"),
    "grid_flat.toml": ("grid", None),
    "grid_seed_typo.toml": ("grid", "top level field 'seed': unknown grid key beside [params] "
                                    "(did you mean seeds?)"),
    "grid_float_seed.toml": ("grid", "top level field 'seeds': seeds must be integers, got "
                                     "float 1.5"),
    "grid_nested_values.toml": ("grid", "[params] field 'ram_gib': values must be int, float, "
                                        "bool or str, got list [4, 64]"),
    "grid_huge_seed_range.toml": ("grid", "top level field 'seeds': '0-100000000' asks for "
                                          "100000001 seeds; the limit is 1000000 runs"),
}


def test_corpus_is_complete():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECT)


@pytest.mark.parametrize("fname", sorted(EXPECT))
def test_corpus_case(fname):
    name, fragment = EXPECT[fname]
    fmt = mutants.FORMATS[name]
    path = CORPUS / fname
    if fragment is None:
        obj = fmt.load(path)
        assert fmt.check(obj, path) is None
        return
    with pytest.raises(fmt.error) as e:
        fmt.load(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and fragment in msg, msg


def test_corpus_loads_are_what_the_file_says():
    from kvmpt.workload.trace import load_qemu_trace
    ops = load_qemu_trace(CORPUS / "trace_bom_crlf.trace")
    assert [o.slot for o in ops] == [0, 1]             # the BOM no longer hides record 1
    prose = load_qemu_trace(CORPUS / "trace_prose.trace")
    assert len(prose) == 1 and prose.prose_lines == [1]
    grid, _ = mutants.FORMATS["grid"].load(CORPUS / "grid_flat.toml")
    assert len(grid) == 432                            # not 8: every parameter is kept


# ---------------------------------------------------------------------------
# Bad API calls: the loader's error (a ValueError), never a TypeError or AttributeError

_BAD_VALUES = [5, 1.5, None, True, [1], {"a": 1}, b"\xff", "\0", "", float("nan"), object(),
               2**80, -1, ("x",), "nope.toml", "/"]


def _api_calls():
    from kvmpt.workload.costs import load_costs
    from kvmpt.workload.layouts import load_layout
    from kvmpt.workload.scenario import load_scenario
    from kvmpt.sweep import Grid, parse_designs, parse_seeds
    from kvmpt.workload.trace import load_memslot_csv, load_ops, load_qemu_trace
    sc = load_scenario("q35-desktop")
    return {
        "load_layout": load_layout, "load_costs": load_costs, "load_scenario": load_scenario,
        "load_qemu_trace": load_qemu_trace, "load_memslot_csv": load_memslot_csv,
        "load_ops": load_ops, "Grid.from_toml": Grid.from_toml, "Grid.from_dict": Grid.from_dict,
        "parse_seeds": parse_seeds, "parse_designs": parse_designs,
        "Grid(params)": lambda v: Grid(v), "Grid(designs)": lambda v: Grid({}, designs=v),
        "Grid(seeds)": lambda v: Grid({}, seeds=v), "Grid(values)": lambda v: Grid({"x": v}),
        "with_overrides(ram_gib)": lambda v: sc.with_overrides(ram_gib=v),
        "with_overrides(churn)": lambda v: sc.with_overrides(churn=v),
        "with_overrides(seed)": lambda v: sc.with_overrides(seed=v),
        "with_overrides(boot)": lambda v: sc.with_overrides(boot=v),
    }


def test_bad_api_calls_raise_value_errors():
    wrong = []
    for name, call in _api_calls().items():
        for v in _BAD_VALUES:
            try:
                call(v)
            except ValueError:
                continue
            except Exception as exc:   # noqa: BLE001 - the test looks for these
                wrong.append(f"{name}({v!r:.30}): {type(exc).__name__}: {exc}")
    assert wrong == []
