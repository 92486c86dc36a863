"""``kvmpt.trace``: kept for the public face (contract.md, ``from kvmpt.trace import
load_qemu_trace``). The importer is the package :mod:`kvmpt.workload.trace` (op, parse,
csvfile, source); this name is that same package object, so patches and ``isinstance``
checks see one module, and ``MemslotOp``, ``TraceError``, ``parse_trace_line`` come with it."""
import sys

from kvmpt.workload import trace as _trace

sys.modules[__name__] = _trace
