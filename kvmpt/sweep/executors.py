"""Where a sweep's runs execute: in this process, a local process pool, or a Dask cluster.

Each executor takes the runs to do, ``payload(spec)`` (the run's scenario), the run function
and ``on_done(spec, record)``; a record is what :func:`execute` returns for one run.  A run
that raises is a record with ``status="error"``, never a crash of the sweep; a worker
process that dies is one too.  Pool workers end with the sweep (:mod:`kvmpt.infra.procs`).
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

from kvmpt.kernel.design import Design

__all__ = ["execute", "run_serial", "run_local", "run_dask", "worker_init", "WORKER_WAIT_S"]

#: how long a Dask sweep waits for a live worker before it gives up (seconds)
WORKER_WAIT_S = 300.0
#: how often a Dask sweep checks for results and live workers (seconds; the worker count is
#: the client's cached scheduler_info(), so a check costs no round trip)
_DASK_POLL_S = 0.05


def _metric(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            return str(v)
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None if math.isnan(v) else v
    return str(v)


def execute(scenario: Any, design: Design, seed: int, key: str, run_fn: Callable) -> dict:
    """Run one point; never raises for an ordinary exception (it is the record's error)."""
    t0 = time.perf_counter()
    try:
        result = run_fn(scenario, design, seed=seed)
        summary = result.summary if hasattr(result, "summary") else result
        if not isinstance(summary, Mapping):
            raise TypeError(f"run returned {type(result).__name__}, not a result with a "
                            ".summary mapping")
        metrics = {str(k): _metric(v) for k, v in summary.items()}
        return {"key": key, "status": "ok", "error": None, "summary": metrics,
                "wall_s": round(time.perf_counter() - t0, 6)}
    except Exception as exc:   # noqa: BLE001 - a failed run is data, not a crash
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        msg = " ".join(str(exc).split()) or "-"
        return {"key": key, "status": "error", "error": f"{type(exc).__name__}: {msg}{where}",
                "summary": {}, "wall_s": round(time.perf_counter() - t0, 6)}


def worker_init(sweep_pid: int | None = None) -> None:
    # One process per core already; keep each run's Numba kernels single-threaded.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    if sweep_pid is not None:           # end with the sweep, even if it is SIGKILLed
        from kvmpt.infra.procs import exit_with
        exit_with(sweep_pid)
        # Ctrl-C reaches the whole process group: the sweep handles it and stops the pool,
        # a worker must not print a KeyboardInterrupt traceback of its own
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(todo, payload, run_fn, workers, on_done):
    """Process pool, at most 2 x workers runs in flight.  A worker that dies (os._exit, a
    segfault) breaks the pool: the runs that were in flight are then retried one at a time
    in a fresh pool, and the one that kills its pool again is recorded as failed."""
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in
                                      multiprocessing.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":
        # the forkserver ends with this process too (kvmpt/_forkserver_guard.py); it only
        # takes effect if this call starts the forkserver, which the first sweep does
        ctx.set_forkserver_preload(["__main__", "kvmpt.infra._forkserver_guard"])
    me = os.getpid()

    def new_pool(n):
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=worker_init,
                                      initargs=(me,))

    queue = list(todo)
    queue.reverse()                          # pop() from the end = grid order
    pool = new_pool(workers)
    inflight: dict[cf.Future, Any] = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < 2 * workers:
                spec = queue.pop()
                try:
                    fut = pool.submit(execute, payload(spec), spec.design, spec.seed,
                                      spec.key, run_fn)
                except cf.process.BrokenProcessPool:
                    # the pool broke after its last results came in: this run never
                    # started, so it goes back in line
                    queue.append(spec)
                    if inflight:         # they fail with BrokenProcessPool: handled below
                        break
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool(workers)
                    continue
                inflight[fut] = spec
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            broken: list[Any] = []
            for fut in sorted(done, key=lambda f: inflight[f].index):
                spec = inflight.pop(fut)
                try:
                    on_done(spec, fut.result())
                except cf.process.BrokenProcessPool:
                    broken.append(spec)
            if broken:
                broken.extend(inflight.values())
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for spec in sorted(broken, key=lambda s: s.index):
                    solo = new_pool(1)
                    try:
                        rec = solo.submit(execute, payload(spec), spec.design, spec.seed,
                                          spec.key, run_fn).result()
                    except cf.process.BrokenProcessPool:
                        rec = {"key": spec.key, "status": "error", "summary": {},
                               "error": "WorkerDied: the worker process running this run "
                                        "exited abruptly", "wall_s": None}
                    finally:
                        solo.shutdown(wait=False, cancel_futures=True)
                    on_done(spec, rec)
                pool = new_pool(workers)
    except BaseException:
        for fut in inflight:
            fut.cancel()
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now (Ctrl-C, an error): its workers are killed, not waited for, so
    the interpreter's exit does not join runs that still have minutes to go."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    for proc in procs:
        proc.join(timeout=5)


def run_serial(todo, payload, run_fn, on_done):
    for spec in todo:
        on_done(spec, execute(payload(spec), spec.design, spec.seed, spec.key, run_fn))


def _n_workers(client) -> int:
    return len((client.scheduler_info() or {}).get("workers", {}))


def run_dask(todo, payload, run_fn, client, on_done, worker_wait: float = WORKER_WAIT_S,
              log=None):
    """Submit every run and collect results as they come.  While the cluster has no live
    worker the sweep says so on stderr, and raises ``TimeoutError`` when none has come back
    after ``worker_wait`` seconds (the runs already done are in the run log)."""
    from distributed import as_completed
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    futures = {}
    batch = []
    for spec in todo:
        fut = client.submit(execute, payload(spec), spec.design, spec.seed, spec.key, run_fn,
                            pure=False, key=f"kvmpt-sweep-{spec.key}-{os.urandom(4).hex()}")
        futures[fut] = spec
        batch.append(fut)
    address = getattr(getattr(client, "scheduler", None), "address", None) or "the scheduler"
    no_worker_since = None
    try:
        pending = as_completed(batch)
        while futures:
            done = pending.next_batch(block=False)
            if not done:
                if _n_workers(client) == 0:
                    now = time.monotonic()
                    if no_worker_since is None:
                        no_worker_since = now
                        log(f"kvmpt sweep: no live Dask worker at {address}; "
                            f"{len(futures)} runs wait (giving up after {worker_wait:g} s)")
                    elif now - no_worker_since > worker_wait:
                        raise TimeoutError(
                            f"no live Dask worker at {address} for {worker_wait:g} s; "
                            f"{len(futures)} runs not done (finished runs are in the run log: "
                            "start workers and rerun with --resume)")
                elif no_worker_since is not None:
                    no_worker_since = None
                    log(f"kvmpt sweep: {_n_workers(client)} Dask worker(s) back; continuing")
                time.sleep(_DASK_POLL_S)
                continue
            for fut in done:
                spec = futures.pop(fut)
                if fut.status == "error":
                    exc = fut.exception()
                    rec = {"key": spec.key, "status": "error", "summary": {}, "wall_s": None,
                           "error": f"{type(exc).__name__}: "
                                    f"{' '.join(str(exc).split()) or '-'}"}
                else:
                    rec = fut.result()
                on_done(spec, rec)
    finally:
        for fut in futures:
            fut.cancel()
