"""Child processes that end with their parent, whatever ends it.

``prctl(PR_SET_PDEATHSIG)`` fires when the parent *thread* exits, and a pool worker's
parent is the forkserver, not the sweep; so each child watches the sweep's pid itself:
a daemon thread blocks on a pidfd (``pidfd_open(2)``, Linux 5.3+) and ends the process
when that pid exits, or polls ``kill(pid, 0)`` once a second where pidfds are missing.
"""
from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["exit_with"]

#: the exit status of a child whose parent is gone (128 + SIGKILL, as if killed with it)
ORPHAN_STATUS = 137


def exit_with(pid: int) -> None:
    """End this process (``os._exit``) as soon as process ``pid`` has ended."""
    if pid <= 1:
        return                          # re-parented to init already: nothing to watch
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(ORPHAN_STATUS)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        os._exit(ORPHAN_STATUS)

    threading.Thread(target=watch, name=f"kvmpt-exit-with-{pid}", daemon=True).start()
