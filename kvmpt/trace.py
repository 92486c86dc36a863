"""``kvmpt.trace``: kept for the public face (contract.md, ``from kvmpt.trace import
load_qemu_trace``). The importer lives in :mod:`kvmpt.workload.trace`; this name is the
same module object, so patches and ``isinstance`` checks see one module."""
import sys

from kvmpt.workload import trace as _trace

sys.modules[__name__] = _trace
