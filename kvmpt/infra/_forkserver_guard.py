"""Preloaded by the multiprocessing forkserver that :func:`kvmpt.sweep.sweep` starts: ends the
forkserver when the process that started it ends, even by SIGKILL.

Nothing else imports this module; importing it watches the importing process's parent.
The forkserver's own children (the pool workers) watch the sweep process themselves
(``kvmpt.sweep.executors.worker_init``), so after a SIGKILL of the sweep no child survives it.
"""
from __future__ import annotations

import os

from kvmpt.infra.procs import exit_with

exit_with(os.getppid())
