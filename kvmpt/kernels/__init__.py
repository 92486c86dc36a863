"""kvmpt's data plane: Numba kernels over plain NumPy arrays (struct of arrays).

Modules: ``policy`` (the one place that decides decorator options and the
cache directory), ``common`` (hash, hlist, slot search), ``writes`` (guest write
stream), ``walk`` (KVMGT's slot walk), ``track`` (bulk write-track counter
updates), ``workload`` (seeded synthetic write streams).  Kernels take arrays and
return arrays or counts; of the model they import only constants (``kvmpt.kernel.memslot``).  The model's bridge to
them is ``kvmpt.kernel.flat`` (flat arrays) and ``kvmpt.kernel.vm.warmup()``.
"""
