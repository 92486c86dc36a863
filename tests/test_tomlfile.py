"""``check_table``: msgspec does the checking, the messages are kvmpt's (file:line, table,
field, problem) and the first problem reported is the same one whatever else is wrong:
unknown keys (in the file's order), then missing keys (in the schema's), then values (in
the schema's)."""
from __future__ import annotations

import pytest

from kvmpt.constants import U64_MAX
from kvmpt.infra.tomlfile import Field, InputError, check_table

SPEC = {"slot": Field(int, lo=0, hi=4095), "gpa": Field(int, lo=0, hi=U64_MAX),
        "gap_us": Field(float, lo=0, hi=3_600_000_000), "seconds": Field(float, lo=0),
        "tag": Field(str, choices=("[M]", "[G]")), "as_id": Field(int, choices=(0, 1)),
        "roles": Field(list, items=str), "smm": Field(bool, required=False)}
GOOD = {"slot": 1, "gpa": 0x1000, "gap_us": 2, "seconds": 0.5, "tag": "[M]", "as_id": 0,
        "roles": ["ram"]}


class Loc:
    def line(self, table, key=None):
        return {None: 3, "slot": 4, "gpa": 5, "gap_us": 6, "seconds": 7, "tag": 8, "as_id": 9,
                "roles": 10, "colour": 11}.get(key, 3)


def _check(entry):
    check_table(InputError, "x.toml", Loc(), ("slot", 0), entry, SPEC)


@pytest.mark.parametrize("change, message", [
    ({"slot": 4096}, "x.toml:4: [slot[0]] field 'slot': 4096 is outside 0..4095"),
    ({"slot": True}, "x.toml:4: [slot[0]] field 'slot': must be int, got bool True"),
    ({"slot": 1.0}, "x.toml:4: [slot[0]] field 'slot': must be int, got float 1.0"),
    ({"gpa": 1 << 80}, "x.toml:5: [slot[0]] field 'gpa': 0x100000000000000000000 is outside "
                       "0..18446744073709551615"),
    ({"gpa": "0x10"}, "x.toml:5: [slot[0]] field 'gpa': must be int, got str '0x10'"),
    ({"gpa": -1}, "x.toml:5: [slot[0]] field 'gpa': -1 is outside 0..18446744073709551615"),
    ({"gap_us": float("nan")}, "x.toml:6: [slot[0]] field 'gap_us': must be a finite number, "
                               "got nan"),
    ({"gap_us": 1e300}, "x.toml:6: [slot[0]] field 'gap_us': 1e+300 is outside 0..3600000000"),
    ({"seconds": float("inf")}, "x.toml:7: [slot[0]] field 'seconds': must be a finite number, "
                                "got inf"),
    ({"seconds": 1 << 1100}, "x.toml:7: [slot[0]] field 'seconds': must be a finite number, "
                             "got 0x1" + "0" * 275),
    ({"tag": "[X]"}, "x.toml:8: [slot[0]] field 'tag': '[X]' is not one of [M] [G]"),
    ({"as_id": 2}, "x.toml:9: [slot[0]] field 'as_id': 2 is not one of 0 1"),
    ({"roles": ["ram", 3]}, "x.toml:10: [slot[0]] field 'roles': items must be str, got int 3"),
    ({"roles": "ram"}, "x.toml:10: [slot[0]] field 'roles': must be a list, got str 'ram'"),
    ({"colour": 1}, "x.toml:11: [slot[0]] field 'colour': unknown field (known: slot, gpa, "
                    "gap_us, seconds, tag, as_id, roles, smm)"),
])
def test_one_problem_one_message(change, message):
    with pytest.raises(InputError) as e:
        _check({**GOOD, **change})
    assert str(e.value) == message


def test_a_good_table_passes_and_optional_keys_may_be_left_out():
    _check(GOOD)
    _check({**GOOD, "smm": True, "gap_us": 3.6e9, "gpa": U64_MAX})


def test_first_problem_unknown_then_missing_then_values_in_schema_order():
    bad = {"tag": "[X]", "slot": -1, **{k: v for k, v in GOOD.items() if k not in
                                         ("tag", "slot", "seconds")}}
    with pytest.raises(InputError, match="field 'zz': unknown field"):
        _check({**bad, "zz": 1})
    with pytest.raises(InputError, match=r"\[slot\[0\]\]: missing field 'seconds'$"):
        _check(bad)
    with pytest.raises(InputError, match="field 'slot': -1 is outside"):
        _check({**bad, "seconds": 1})
    with pytest.raises(InputError, match=r"x.toml:3: \[slot\[0\]\]: must be a table"):
        _check([1, 2])


def test_a_schema_msgspec_cannot_hold_is_refused_when_declared():
    with pytest.raises(TypeError, match="choices"):
        Field(float, choices=(1.5,))
    with pytest.raises(TypeError, match="kind"):
        Field(tuple)
