"""Run kvmpt's kernel benchmarks: ``python benchmarks/bench.py [options]`` (= ``kvmpt bench``)."""
import sys

from kvmpt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
