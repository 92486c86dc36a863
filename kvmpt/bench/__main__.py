"""``python -m kvmpt.bench [options]``: the same run as ``kvmpt bench``."""
import sys

from kvmpt.bench import main

sys.exit(main())
