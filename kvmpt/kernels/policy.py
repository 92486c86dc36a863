"""Decorator policy for every jitted kernel of kvmpt, in one place.

Every kernel module does ``from .policy import kernel`` and decorates with
``@kernel``; nothing else in kvmpt calls ``numba.njit``.  The policy:

* ``cache=True``: compiled kernels are written next to the source
  (``kvmpt/kernels/__pycache__``), or to ``NUMBA_CACHE_DIR`` when set.  If
  neither that directory nor numba's user-wide cache (``~/.cache/numba``) is
  writable, numba raises at import time ("no locator available"); this module
  then points ``NUMBA_CACHE_DIR`` at a per-user directory under the system
  temporary directory before any kernel is decorated.  ``KVMPT_NUMBA_CACHE=0``
  turns caching off.
* ``boundscheck=False`` unless ``KVMPT_BOUNDSCHECK=1`` (the tests may set it).
* ``parallel=False``: every kernel is a serial loop (the benchmark goals are per
  core, and the two cores of a CI runner are shared).
* ``nogil=True``, ``error_model="numpy"`` (no Python exceptions from arithmetic).
* With ``NUMBA_DISABLE_JIT=1`` a kernel is its plain Python function, run under
  ``np.errstate(over="ignore")`` because the hash multiplies modulo 2**64.
"""
from __future__ import annotations

import functools
import os
import tempfile

import numba
import numpy as np

__all__ = ["kernel", "CACHE", "BOUNDSCHECK", "JIT_DISABLED", "cache_dir"]

CACHE = os.environ.get("KVMPT_NUMBA_CACHE", "1") not in ("0", "")
BOUNDSCHECK = os.environ.get("KVMPT_BOUNDSCHECK", "0") not in ("0", "")
JIT_DISABLED = bool(numba.config.DISABLE_JIT)


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def cache_dir() -> str:
    """Where numba will put (or find) the compiled kernels, after the fallback."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")


def _ensure_cache_locator() -> None:
    """Numba 0.68 tries NUMBA_CACHE_DIR, the in-tree ``__pycache__``, the user-wide
    cache dir, then IPython's; with none writable, ``cache=True`` fails at import.
    Fall back to a per-user directory under the system temporary directory."""
    if not CACHE or numba.config.CACHE_DIR:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    if _writable(os.path.join(here, "__pycache__")):
        return
    user = os.path.join(os.path.expanduser("~"), ".cache", "numba")
    if _writable(user):
        return
    fallback = os.path.join(tempfile.gettempdir(), f"kvmpt-numba-cache-{os.getuid()}")
    os.environ["NUMBA_CACHE_DIR"] = fallback
    numba.config.CACHE_DIR = fallback


_ensure_cache_locator()


def _pure_python(fn):
    @functools.wraps(fn)
    def run(*args):
        with np.errstate(over="ignore"):
            return fn(*args)
    run.py_func = fn
    return run


def kernel(fn):
    """Decorate a kvmpt kernel with the package-wide policy."""
    if JIT_DISABLED:
        return _pure_python(fn)
    return numba.njit(cache=CACHE, boundscheck=BOUNDSCHECK, nogil=True,
                      error_model="numpy")(fn)
