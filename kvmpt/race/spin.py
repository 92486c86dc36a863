"""Run SPIN on the Promela export and compare with the explorer (:func:`agreement`)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from kvmpt.race import state as S
from kvmpt.race.explorer import explore
from kvmpt.race.programs import LOCKS
from kvmpt.race.promela import to_promela
from kvmpt.race.scenarios import DEFAULT_SCENARIO, SCENARIOS


@dataclass
class SpinResult:
    lock: str
    scenario: str
    verdict: str
    kinds: tuple                # reachable bug kinds, VERDICTS order
    states: int                 # SPIN's "states, stored"
    transitions: int
    seconds: float
    spin_version: str


def spin_available() -> str | None:
    """Path of the ``spin`` executable and a C compiler, or None."""
    spin, cc = shutil.which("spin"), shutil.which("cc") or shutil.which("gcc")
    return spin if spin and cc else None


def verify(lock: str = "vgpu_lock", scenario: str = DEFAULT_SCENARIO, *, workdir=None,
           **kw) -> SpinResult:
    """Export, run SPIN, and read back the reachable bug kinds and the verdict."""
    spin = spin_available()
    if spin is None:
        raise RuntimeError("SPIN is not installed (Debian package 'spin', plus a C compiler)")
    text, sites = to_promela(lock, scenario, **kw)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        with open(os.path.join(d, "model.pml"), "w") as f:
            f.write(text)
        run = lambda *c: subprocess.run(c, cwd=d, capture_output=True, text=True, check=True)
        run(spin, "-o3", "-a", "model.pml")   # -o3: no statement merging, so every bug line is listed
        run(shutil.which("cc") or "gcc", "-O0", "-DNOREDUCE", "-DSAFETY", "-o", "pan", "pan.c")
        out = run("./pan", "-E", "-m1000000").stdout
        version = run(spin, "-V").stdout.strip()
    if "errors: 0" not in out:
        raise RuntimeError(f"SPIN reported errors for {lock}/{scenario}:\n{out}")
    unreached = {int(n) for n in re.findall(r"model\.pml:(\d+), state", out)}
    kinds = tuple(k for k in S.BUGS if any(kk == k and ln not in unreached
                                           for ln, kk in sites.items()))
    stored = int(re.search(r"(\d+) states, stored", out).group(1))
    trans = int(re.search(r"(\d+) transitions", out).group(1))
    return SpinResult(lock, scenario, kinds[0] if kinds else "safe", kinds, stored, trans,
                      time.perf_counter() - t0, version)


@dataclass
class Agreement:
    """One design x scenario: the explorer's verdict and reachable kinds next to SPIN's."""

    lock: str
    scenario: str
    verdict: str
    spin_verdict: str
    kinds: tuple
    spin_kinds: tuple
    states: int                 # the explorer's distinct states
    spin_states: int            # SPIN's states stored
    spin_seconds: float

    @property
    def agrees(self) -> bool:
        return self.verdict == self.spin_verdict and set(self.kinds) == set(self.spin_kinds)


def agreement(scenario_names=None, locks=LOCKS, **kw) -> list[Agreement]:
    """Explore and SPIN-verify every (lock, scenario) pair (all scenarios by default)."""
    rows = []
    for sc in scenario_names or SCENARIOS:
        for lk in locks:
            r, s = explore(lk, sc, **kw), verify(lk, sc, **kw)
            rows.append(Agreement(lk, sc, r.verdict, s.verdict,
                                  tuple(k for k in S.BUGS if k in r.kinds), s.kinds,
                                  r.states, s.states, s.seconds))
    return rows
