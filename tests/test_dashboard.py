"""The dashboard views: its parameter table, one experiment call (``claims.evaluate``), the
figures of ``kvmpt.review.figures.dashboard``, and the warm-up that makes a click cheap."""
from __future__ import annotations

import threading

import pytest

from kvmpt import Design
from kvmpt.review import claims
from kvmpt.review.claims import explore as E

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")


def test_parameter_table():
    from kvmpt.review import dashboard as D
    names = [p.name for p in D.PARAMETERS]
    assert len(names) == len(set(names))
    assert set(D.DESIGN_KNOBS) <= set(names)
    assert {"slot_gib", "tracked", "write_rate", "seed"} <= set(names)
    w = D.controls()
    assert type(w["slot_hook"]).__name__ == "ToggleButtons"
    assert type(w["slot_gib"]).__name__ == "SelectionSlider"


def test_dashboard_redraws_from_one_experiment_call():
    from kvmpt.review import dashboard as D
    db = D.Dashboard({"tracked": 64, "scenario": "q35-adversarial"}, warm=False)
    assert db.warm_thread is None
    assert "design <b>v6.5</b>" in db.timeline.layout.title.text
    db.controls["slot_hook"].value = "remove"
    assert "<b>remove/allow-move/none/drop</b>" in db.timeline.layout.title.text
    db.controls["move"].value = "reject"
    assert "<b>0 of" in db.timeline.layout.title.text     # nothing missed
    db.controls["slot_hook"].value = "flush"
    calls, hits = E.scenario_run.calls, E.scenario_run.hits
    db.controls["move"].value = "allow"                      # back to v6.5: a cached run
    assert (E.scenario_run.calls, E.scenario_run.hits) == (calls, hits + 1)
    assert "design <b>v6.5</b>" in db.timeline.layout.title.text
    assert "ptable lock <b>none: use-after-free</b>" in db.cost.layout.title.text.replace("<br>", " ")


def test_cost_curve_ignores_the_move_knob():
    """evaluate() prices a DELETE once per design with move="allow": the MOVE check is
    never reached by a DELETE, so the rows are those of the design itself."""
    for d in (Design.preset("v6.5").replace(move="reject"), Design.preset("v6.6")):
        direct = claims.price_rows(claims.cost_curve(
            {d.name: d}, [g << 18 for g in E.CURVE_GIB], [16],
            exact_max_pages=E.EXACT_MAX_PAGES))
        got = E._curve(d.replace(move="allow"), 16, 0)
        assert [dict(r, design=None) for r in got] == [dict(r, design=None) for r in direct]


def test_warm_computes_each_setting_once_and_the_same_results():
    values = {"slot_hook": "remove", "move": "reject", "kvmgt_lock": "vgpu_lock",
              "drop_protection_on_remove": False, "scenario": "q35-desktop", "slot_gib": 4,
              "tracked": 16, "write_rate": 500, "seed": 3}
    options = {"move": ("allow", "reject"), "seed": (3, 4)}
    assert [v["move"] for v in E.neighbours(values, options)] == ["allow", "reject"]
    assert E.warm(values, options) == 2
    calls = E.scenario_run.calls
    warmed = E.evaluate({**values, "move": "allow"})
    assert E.scenario_run.calls == calls                      # served from the warm-up
    E.scenario_run.cache_clear()
    fresh = E.evaluate({**values, "move": "allow"})
    assert fresh["run"].summary == warmed["run"].summary
    stop = threading.Event()
    stop.set()
    assert E.warm(values, options, stop) == 0


def test_dashboard_figures_are_pure():
    from kvmpt.review.figures import dashboard as F
    values = {"slot_hook": "flush", "move": "allow", "kvmgt_lock": "none",
              "drop_protection_on_remove": True, "scenario": "q35-desktop", "slot_gib": 64,
              "tracked": 16, "write_rate": 500, "seed": 0}
    res = E.evaluate(values)
    fig = F.hook_cost_curve(res)
    assert [t.name for t in fig.data][-1] == "chosen slot size"
    assert fig.data[-1].x[0] == 64 and fig.layout.xaxis.type == "log"
    cols, rows = ["effect", "a", "b"], [["x", "1", "2"], ["y", "3", "4"]]
    t = F.variant_tables({"one": (cols, rows), "two": (cols, rows)})
    assert [b.label for b in t.layout.updatemenus[0].buttons] == ["one", "two"]
    assert [tr.visible for tr in t.data] == [True, False]
    with pytest.raises(ValueError, match="no variant"):
        F.variant_tables({})


def test_first_click_redraws_from_the_warmed_cache():
    from kvmpt.review import dashboard as D
    values = {"scenario": "q35-desktop", "tracked": 16, "write_rate": 500, "seed": 5}
    db = D.Dashboard(values, warm=True)
    db.close()                                   # the background warmer stops and joins
    assert not db.warm_thread.is_alive()
    opts = db._options()
    assert opts["seed"] == tuple(range(10)) and opts["move"] == ("allow", "reject")
    db.warm()                                    # what the warmer does, here and now
    calls, first = E.scenario_run.calls, dict(db.values)
    for name, value in (("slot_hook", "remove"), ("write_rate", 2_000), ("seed", 6)):
        db.controls[name].value = value          # each one click away from the first setting
        db.controls[name].value = first[name]    # and back
    assert E.scenario_run.calls == calls         # no scenario ran on a click
