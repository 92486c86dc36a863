"""The run log that makes a sweep resumable, and the fingerprint that guards it.

With ``out=`` every finished or failed run is appended to ``<out>.runs.jsonl`` as it
completes: a header line (the table's metadata and a fingerprint), then one JSON line per
run, flushed.  ``resume=True`` skips the runs in that log, or in a table saved earlier at
``out``, when their fingerprint matches: a hash of the kvmpt version, the scenario's name and
definition and the model's source (:func:`source_fingerprint`).  A log torn by a crash is
read up to its damage.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from kvmpt.sweep.grid import KEY_HEX
from kvmpt.sweep.table import load_table

__all__ = ["RunLog", "log_path_for", "source_fingerprint", "fingerprint", "records_from_table"]

_LOG_FORMAT = 1
#: what the fingerprint leaves out: the sweep machinery, the command line and the views
_NOT_MODEL_DIRS = ("sweep", "review", "live", "notebooks")
_NOT_MODEL_FILES = ("cli.py",)


def source_fingerprint() -> str:
    """A hash of the model's source and data (kvmpt's modules except the sweep package,
    figures and views; ``data/`` except sweeps): resuming refuses a run log or table made by
    other code."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    files = [p for p in pkg.rglob("*.py") if p.relative_to(pkg).parts[0] not in _NOT_MODEL_DIRS
             and p.name not in _NOT_MODEL_FILES]
    data = pkg / "data"
    files += [p for p in data.rglob("*") if p.is_file() and p.suffix in (".toml", ".trace", ".csv")
              and "sweeps" not in p.relative_to(data).parts]
    for p in sorted(files):
        h.update(str(p.relative_to(pkg)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:KEY_HEX]


def fingerprint(version: str, scenario_name: str, description: Any) -> str:
    """The fingerprint of a sweep's runs: kvmpt version, scenario, its definition, the model."""
    blob = json.dumps([version, scenario_name, description, source_fingerprint()],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_HEX]


def log_path_for(out: str | os.PathLike) -> Path:
    """Where :func:`sweep` keeps the run log of a sweep writing ``out``."""
    return Path(str(out) + ".runs.jsonl")


class RunLog:
    """JSON lines: a header, then one line per finished or failed run (appended, flushed)."""

    def __init__(self, path: Path, meta: dict, resume: bool):
        header = {"kvmpt_sweep_log": _LOG_FORMAT, **meta}
        self.path = path
        self.done: dict[str, dict] = {}
        if resume and path.exists():
            # a log torn or damaged by a crash: bad bytes and bad lines are skipped, not fatal
            text = path.read_bytes().decode("utf-8", "replace")
            lines = text.splitlines()
            first = _loads(lines[0]) if lines else None
            if first is not None and first.get("kvmpt_sweep_log") == _LOG_FORMAT:
                if first.get("fingerprint") != header["fingerprint"]:
                    raise ValueError(
                        f"{path}: this run log was made by a different scenario definition or "
                        "model source; run without --resume to start over")
                for line in lines[1:]:
                    rec = _loads(line)      # a torn last line (killed mid-write) is skipped
                    if rec and "key" in rec and rec.get("status") in ("ok", "error"):
                        self.done[rec["key"]] = rec
                self.f = open(path, "a")
                if lines and not text.endswith("\n"):
                    self.f.write("\n")
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w")
        self.f.write(json.dumps(header, sort_keys=True) + "\n")
        self.f.flush()

    def append(self, rec: dict) -> None:
        # keys in their order: a run's metrics keep the order its summary gave them
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _loads(line: str):
    try:
        v = json.loads(line)
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, dict) else None


def records_from_table(out, expected: str, wanted: set[str], retry_failed: bool
                       ) -> dict[str, dict]:
    """Run records rebuilt from a table :func:`sweep` saved at ``out`` (so ``resume`` can
    extend a finished sweep's grid); nothing if it is missing or from another scenario/version."""
    try:
        old = load_table(out)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if old.meta.get("fingerprint") != expected or "key" not in old.columns:
        return {}
    metrics = old.metric_columns
    recs = {}
    for r in old.rows:
        if r["key"] in wanted and (r.get("status") == "ok" or not retry_failed):
            recs[r["key"]] = {"key": r["key"], "status": r.get("status"), "error": r.get("error"),
                              "summary": {m: r[m] for m in metrics if r.get(m) is not None}}
    return recs
