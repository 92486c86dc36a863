"""Where kvmpt's files are: the one place that knows the package layout on disk.

``data/`` and ``notebooks/`` ship inside the package (``kvmpt/data`` and
``kvmpt/notebooks`` are links to the checkout's top-level folders, copied into
the wheel), so a ``pip install``-ed kvmpt finds them without a checkout.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = PACKAGE_DIR / "data"
NOTEBOOK_DIR = PACKAGE_DIR / "notebooks"
#: the checkout's top level (benchmarks/ lives there only, not in the wheel)
CHECKOUT_DIR = PACKAGE_DIR.parent
