"""The C contender: ``benchmarks/kvmpt_loops.c`` compiled with the system ``cc -O2``
into a temporary directory and loaded with ctypes.  Without ``cc`` or the source
file (a non-source install) the comparison is skipped with a note."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile

import numpy as np

from kvmpt.infra.paths import CHECKOUT_DIR


def load_c(cfg, rep):
    """The compiled loops (a ``ctypes.CDLL``), or None with the reason printed."""
    if cfg.no_c:
        rep.line("C comparison: skipped (--no-c)")
        return None
    src = cfg.c_source or CHECKOUT_DIR / "benchmarks" / "kvmpt_loops.c"
    cc = shutil.which("cc")
    if cc is None:
        rep.line("C comparison: skipped (no system `cc` on PATH)")
        return None
    if not src.is_file():
        rep.line(f"C comparison: skipped ({src} not found; run from a source checkout "
                 "or pass --c-source)")
        return None
    tmp = tempfile.mkdtemp(prefix="kvmpt-bench-")
    so = os.path.join(tmp, "kvmpt_loops.so")
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", so, str(src)],
                       capture_output=True, text=True)
    if r.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        rep.line(f"C comparison: skipped (cc failed: {r.stderr.strip().splitlines()[:1]})")
        return None
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    rep.line(f"C comparison: {ver[0] if ver else cc}, -O2, {src.name}")
    lib = ctypes.CDLL(so)
    P = ctypes.c_void_p
    I64, U64, INT, UINT = ctypes.c_int64, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint
    lib.guest_write_batch.argtypes = [P, I64, P, P, P, P, I64, INT, UINT, P, P, P, P, P]
    lib.guest_write_batch.restype = None
    lib.slot_walk.argtypes = [U64, I64, UINT, P, P, P, P, P, INT, P, P]
    lib.slot_walk.restype = None
    lib._tmp = tmp
    return lib


def unload_c(lib) -> None:
    """Remove the temporary directory of :func:`load_c`'s library."""
    if lib is not None:
        shutil.rmtree(lib._tmp, ignore_errors=True)


def _p(a):
    return a.ctypes.data


def c_guest_writes(lib, gpas, sa, tracker, pt):
    """The C write loop on the model's slot and ptable arrays; returns its 8 counts."""
    stats = np.zeros(8, dtype=np.int64)
    lib.guest_write_batch(_p(gpas), gpas.size, _p(sa.base), _p(sa.npages), _p(sa.trap),
                          _p(sa.counter_addrs), sa.base.size, int(tracker), int(pt.shift),
                          _p(pt.head), _p(pt.nxt), _p(pt.key), _p(pt.occ), _p(stats))
    return stats


def c_walk(lib, base, npages, pt, delete):
    """The C slot walk over ``pt`` (deleting the hits when ``delete``): (hits, chain
    steps)."""
    hits = np.zeros(max(pt.n, 1), dtype=np.uint64)
    out = np.zeros(2, dtype=np.int64)
    lib.slot_walk(base, npages, int(pt.shift), _p(pt.head), _p(pt.nxt), _p(pt.key),
                  _p(pt.clen), _p(pt.occ), int(delete), _p(hits), _p(out))
    return int(out[0]), int(out[1])
