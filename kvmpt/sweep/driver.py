"""``sweep()``: plan a grid on a scenario, skip the runs already done, run the rest, and
assemble the table.

:func:`plan` resolves the scenario and builds every run's scenario before any run, so a bad
parameter name or value fails first, naming the grid file's line or the option.
:func:`sweep` then picks an executor (serial, local pool, Dask), books each run's record in
the run log as it comes, and returns the :class:`~kvmpt.sweep.table.SweepTable` in grid order.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

#: the scenario a sweep runs when none is named (spec/workloads.md §5's default VM and workload)
from kvmpt.workload.scenario.definition import DEFAULT_SCENARIO
from kvmpt.sweep.executors import WORKER_WAIT_S, run_dask, run_local, run_serial
from kvmpt.sweep.grid import Grid, RunSpec
from kvmpt.sweep.parse import GridError
from kvmpt.sweep.runlog import RunLog, fingerprint, log_path_for, records_from_table
from kvmpt.sweep.table import DESIGN_COLUMNS, SweepTable, assemble

__all__ = ["sweep", "plan", "DEFAULT_SCENARIO", "MAX_WORKERS"]

#: the most local worker processes ``workers=`` may ask for
MAX_WORKERS = 256


def default_run_fn():
    from kvmpt.workload.scenario import run as scenario_run
    return scenario_run


def resolve_scenario(scenario):
    if scenario is None or isinstance(scenario, (str, os.PathLike)):
        from kvmpt.workload.scenario import load_scenario
        return load_scenario(DEFAULT_SCENARIO if scenario is None else scenario)
    if not hasattr(scenario, "with_overrides"):
        raise GridError(f"scenario: must be a name, a path, or a Scenario (with "
                        f".with_overrides), got {type(scenario).__name__}", key="scenario")
    return scenario


def scenario_name(sc) -> str:
    return str(getattr(sc, "name", None) or type(sc).__name__)


def scenario_description(sc) -> Any:
    """The scenario's parameters as JSON (saved with the table, and part of the run log's
    fingerprint); ``Scenario.parameters()`` when it has one."""
    if callable(getattr(sc, "parameters", None)):
        try:
            return json.loads(json.dumps(sc.parameters(), sort_keys=True, default=str))
        except (TypeError, ValueError):
            pass
    if dataclasses.is_dataclass(sc):
        try:
            d = {f.name: getattr(sc, f.name) for f in dataclasses.fields(sc) if f.compare}
            return json.loads(json.dumps(d, sort_keys=True, default=str))
        except (TypeError, ValueError, RecursionError):
            pass
    return repr(sc)


def kvmpt_version() -> str:
    from kvmpt import __version__
    return __version__


def plan(grid: Grid, scenario: Any = None, expand: bool = True
         ) -> tuple[Any, list[RunSpec], dict[tuple, Any]]:
    """Resolve the scenario, build every run's scenario and expand the grid, so a bad
    parameter name or value fails before any run: (base scenario, runs, params -> scenario).
    ``expand=False`` checks without listing the runs (``--dry-run``)."""
    try:
        base = resolve_scenario(scenario)
    except ValueError as exc:
        at = grid.where("scenario")
        if at is None or isinstance(exc, GridError):
            raise
        raise GridError(f"{at}: {exc}", key="scenario", problem=str(exc)) from None
    name = scenario_name(base)
    scen_cache: dict[tuple, Any] = {}
    names = grid.param_names
    for combo in itertools.product(*(v for _, v in grid.params)):
        params = tuple(zip(names, combo))
        try:
            scen_cache[params] = base.with_overrides(**dict(params))
        except (TypeError, ValueError) as exc:
            key = getattr(exc, "field", None)
            problem = getattr(exc, "problem", None) or str(exc)
            at = grid.where(key) if key else None
            what = f"{key}={dict(params)[key]!r}" if key in names else str(dict(params))
            msg = f"scenario {name!r} rejects {what}: {problem}"
            raise GridError(f"{at}: {msg}" if at else msg, key=key, problem=msg) from None
    specs = grid.expand(name) if expand else []
    return base, specs, scen_cache


def sweep(grid: Grid | Mapping[str, Any], scenario: Any = None,
          out: str | os.PathLike | None = None,
          scheduler: str | None = None, client: Any = None, workers: int | None = None,
          progress: bool = True, run_fn: Callable | None = None, *, resume: bool = False,
          retry_failed: bool = False, keep_log: bool = False,
          worker_wait: float = WORKER_WAIT_S) -> SweepTable:
    """Run every point of ``grid`` on ``scenario`` and return the tidy :class:`SweepTable`.

    ``grid``: a :class:`Grid`, or a dict as :meth:`Grid.from_dict` takes.
    ``scenario``: a scenario name or file (``kvmpt.workload.scenario.load_scenario``), or a Scenario;
    each run is ``run_fn(scenario.with_overrides(**params), design, seed=seed)``.
    ``out``: save the table there (``.parquet`` or ``.csv``) and keep a run log beside it.
    ``scheduler``: a Dask scheduler address (``tcp://HOST:PORT``), or pass ``client``;
    otherwise a local process pool of ``workers`` processes (default: one per core;
    ``workers=0`` runs in this process, serially).
    ``progress``: a tqdm bar on stderr when it is a terminal.
    ``run_fn``: defaults to ``kvmpt.workload.scenario.run``; must be picklable (a module-level function)
    for the process pool and Dask.
    ``resume``: skip the runs already in ``out``'s run log or in the table saved at ``out``
    (failed ones too, unless ``retry_failed``).  Without it an existing log is started over.
    ``worker_wait``: on Dask, how long to wait while no worker is alive before raising
    ``TimeoutError`` (the sweep says on stderr that it is waiting).

    Same grid, scenario and seeds give the same table, in grid order, whichever executor ran it.
    A run that raises is a row with ``status="error"`` and the exception in ``error``.
    """
    if not isinstance(grid, Grid):
        grid = Grid.from_dict(grid)
    if scheduler is not None and client is not None:
        raise ValueError("give scheduler or client, not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 0 <= workers <= MAX_WORKERS):
        raise ValueError(f"workers={workers!r}: want a count 0..{MAX_WORKERS}")
    if out is not None:
        if not isinstance(out, (str, os.PathLike)):
            raise ValueError(f"out={out!r}: want a path ending in .parquet or .csv")
        check_out(Path(out))
    if isinstance(worker_wait, bool) or not isinstance(worker_wait, (int, float)) \
            or not 0 <= worker_wait <= 7 * 86400:
        raise ValueError(f"worker_wait={worker_wait!r}: want seconds, 0..{7 * 86400}")
    base, specs, scen_cache = plan(grid, scenario)
    run_fn = run_fn or default_run_fn()
    name = scenario_name(base)

    def payload(spec: RunSpec):
        return scen_cache[spec.params]

    description = scenario_description(base)
    version = kvmpt_version()
    meta = {"kvmpt_version": version, "scenario": name, "scenario_definition": description,
            "grid": grid.to_dict(), "param_columns": list(grid.param_names),
            "design_columns": list(DESIGN_COLUMNS)}
    meta["fingerprint"] = fingerprint(version, name, description)
    log = None
    records: dict[str, dict] = {}
    if out is not None:
        wanted = {s.key for s in specs}
        if resume:      # runs of an earlier, finished sweep into the same file count as done
            records.update(records_from_table(out, meta["fingerprint"], wanted, retry_failed))
        log = RunLog(log_path_for(out), meta, resume)
        for k, rec in log.done.items():
            if k in wanted and (rec["status"] == "ok" or not retry_failed):
                records[k] = rec
    resumed = len(records)
    todo = [s for s in specs if s.key not in records]

    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(specs), initial=resumed, desc=f"sweep {name}", unit="run",
                       disable=not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None
    n_failed_now = 0

    def on_done(spec: RunSpec, rec: dict) -> None:
        nonlocal n_failed_now
        rec = dict(rec, index=spec.index, seed=spec.seed, params=spec.params_dict,
                   design=spec.design.name)
        records[spec.key] = rec
        if rec["status"] != "ok":
            n_failed_now += 1
        if log is not None:
            log.append(rec)
        if bar is not None:
            bar.update(1)
            if n_failed_now:
                bar.set_postfix(failed=n_failed_now, refresh=False)

    t0 = time.perf_counter()
    own_client = None
    try:
        if todo:
            if scheduler is not None or client is not None:
                if client is None:
                    from distributed import Client
                    own_client = client = Client(scheduler, timeout="20s")
                run_dask(todo, payload, run_fn, client, on_done, worker_wait)
            elif workers == 0 or (workers is None and (os.cpu_count() or 1) == 1) \
                    or len(todo) == 1 and workers is None:
                run_serial(todo, payload, run_fn, on_done)
            else:
                run_local(todo, payload, run_fn, workers or os.cpu_count() or 1, on_done)
    finally:
        if bar is not None:
            bar.close()
        if own_client is not None:
            own_client.close()
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - t0

    table = assemble(specs, records, grid.param_names, name, meta)
    table.stats = {"runs": len(specs), "ran": len(todo), "resumed": resumed,
                   "failed": len(table.failed()), "elapsed_s": elapsed}
    if out is not None:
        table.save(out)
        if not table.failed() and not keep_log:
            log_path_for(out).unlink(missing_ok=True)
    return table


def check_out(out: Path, make: bool = True) -> None:
    """The output path: ``.parquet`` or ``.csv``, in a directory (made if missing) that is
    a directory; said before any run, in words, not as ``File exists``."""
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{out}: output must end in .parquet or .csv")
    if out.is_dir():
        raise ValueError(f"{out}: is a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{out}: {parent} is a file, not a directory")
            break
    if not make:
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{out}: cannot make {out.parent}: {exc.strerror or exc}") from None
