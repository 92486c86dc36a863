"""``python -m kvmpt.cli``: the ``kvmpt`` command."""
import sys

from kvmpt.cli import main

sys.exit(main())
