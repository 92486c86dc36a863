"""kvmpt: an executable design review of Linux KVM's x86 page-track hooks and KVMGT.

The public face (see contract.md): ``Design``, ``VM``, ``kvmpt.workload.trace.load_qemu_trace``,
``kvmpt.race.explore``, ``kvmpt.run``, ``kvmpt.sweep.sweep`` and the ``kvmpt`` command.
"""
from __future__ import annotations

from kvmpt._version import __version__  # noqa: E402

from kvmpt.kernel.design import Design  # noqa: E402

__all__ = ["Design", "VM", "__version__"]


def __getattr__(name):  # lazy: keep `import kvmpt` cheap (no numba, no plotly)
    if name == "VM":           # the model's VM plus vm.replay() (kvmpt.workload.replay.VM)
        from kvmpt.workload.replay import VM
        return VM
    if name == "run":
        from kvmpt.workload.scenario import run
        return run
    if name == "sweep":   # the package (its function is kvmpt.sweep.sweep), imported on first use
        import importlib
        return importlib.import_module(".sweep", __name__)
    raise AttributeError(f"module 'kvmpt' has no attribute {name!r}")
