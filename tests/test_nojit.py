"""The kernel tests again with ``NUMBA_DISABLE_JIT=1``: the jitted functions run as
plain Python, so a kernel that only works compiled (or only uncompiled) is caught.
NUMBA_DISABLE_JIT must be set before numba is imported, hence a child process."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_kernel_and_model_tests_pass_without_the_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_kernels.py", "tests/test_model.py", "tests/test_replay.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    tail = "\n".join(r.stdout.splitlines()[-15:])
    assert r.returncode == 0, f"with NUMBA_DISABLE_JIT=1:\n{tail}\n{r.stderr[-2000:]}"
    assert " passed" in tail
