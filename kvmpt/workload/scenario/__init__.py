"""Named, seeded scenarios and ``run(scenario, design)``: the numbers of the review.

A scenario (a TOML file in ``data/scenarios/``) names

* a VM **layout** from ``data/layouts/`` (``kvmpt.workload.layouts``) and how it boots:
  ``boot = "layout"`` builds the layout and replays its ``[[churn]]`` entries,
  ``boot = "trace:NAME"`` replays a real QEMU boot trace from ``data/traces/``
  (then adds layout slots the trace lacks, such as the vGPU aperture);
* a **tracked set**: ``tracked_gfns`` guest page-table pages GVT shadows once
  the guest i915 driver loads, placed in the RAM slots in runs of 1-64
  (``kvmpt.workload.replay.place_tracked``, workloads.md §2.2);
* a **guest write stream**: ``write_rate`` writes/s for ``duration_s``
  seconds, a fraction ``pt_fraction`` aimed at shadowed page-table pages
  (``hot_share`` of those at the hottest ``hot_fraction`` of them), the rest
  spread over RAM;
* a **memslot op schedule** after the driver loads, from a churn
  **profile** (:data:`PROFILES`) whose rates the file may override: OVMF
  variable writes (pflash VARS slot DELETE/CREATE pairs), vGPU BAR toggle
  bursts, reboots, and for the adversarial VMM MOVEs of RAM slots with a
  fraction failing in prepare (``vm.fail_next_prepare(ENOMEM)``).  QEMU never
  MOVEs (workloads.md §1.6), so only the ``adversarial`` profile does.

:func:`run` applies the schedule to a fresh ``VM(design)`` in time order; the
guest writes that fall between two events run as one batch
(``vm.guest_write_batch``).  Every count in the result is the model's own
(``vm.work``, ``vm.hook_calls``, ``vm.write_stats``) and every cycle figure is
``kvmpt.workload.costs.CostModel``'s price of it.  The result has a flat
``summary`` (:data:`SUMMARY_METRICS`) and a per-op ``timeseries`` of NumPy columns.

One concern per module:

==============  ==================================================================
``definition``  the :class:`Scenario` value, :class:`Figure`, churn ``PROFILES``, bounds
``load``        reading ``data/scenarios/*.toml``: ``load_scenario``, ``list_scenarios``
``schedule``    the :class:`Event` list of a run, in time order (``build_schedule``)
``writes``      the guest write stream (times and target gpas)
``loop``        the event loop: ``run`` and the run's state
``metrics``     ``SUMMARY_METRICS``: the declared summary, priced by ``CostModel``
``result``      ``RunResult``, its per-op and per-hook-call columns, its text table
==============  ==================================================================
"""
from __future__ import annotations

from kvmpt.workload.scenario.definition import (DEFAULT_SCENARIO, PROFILES, SCENARIO_DIR,
                                                TRACE_DIR, Figure, Scenario, ScenarioError)
from kvmpt.workload.scenario.load import list_scenarios, load_scenario
from kvmpt.workload.scenario.loop import run
from kvmpt.workload.scenario.metrics import SUMMARY_METRICS
from kvmpt.workload.scenario.result import RunResult

__all__ = [
    "DEFAULT_SCENARIO", "SCENARIO_DIR", "TRACE_DIR", "PROFILES", "Figure", "Scenario",
    "ScenarioError", "RunResult", "load_scenario", "list_scenarios", "run", "SUMMARY_METRICS",
]
