"""The ``kvmpt`` command.

Subcommands live in their own modules, found through :data:`SUBCOMMANDS`; each
module provides ``add_arguments(parser)`` and ``run(args) -> int`` (and may
set ``HELP``, a one-line summary).  Only the module of the subcommand being run
is imported, so ``kvmpt replay`` does not pay for ``kvmpt sweep``'s imports.

Errors in the input (bad options, a malformed trace line, an unknown design or
layout, a missing file) print one line, ``kvmpt: error: ...``, to stderr and
exit with status 2, as argparse does for usage errors: every loader raises a
``ValueError`` subclass (:class:`kvmpt.infra.tomlfile.InputError`) naming the file,
line and field.  A ``TimeoutError`` (a Dask sweep that lost all its workers)
is one ``kvmpt: error`` line and status 1; any other failure prints one
``kvmpt: internal error`` line and exits 1.  No traceback unless ``KVMPT_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: subcommand -> (module, one-line help shown by ``kvmpt --help`` without importing it)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("kvmpt.cli.replay",
               "replay a QEMU memslot trace (or a layout's boot churn) through each design"),
    "report": ("kvmpt.cli.report", "execute the design notebooks and write the report "
                               "(--out DIR, --format html|text)"),
    "bench": ("kvmpt.cli.bench", "run the benchmarks and print their ratios"),
    "sweep": ("kvmpt.cli.sweep", "sweep design knobs and workload parameters"),
    "race": ("kvmpt.cli.race", "explore the lock interleavings of a design "
                               "(--email: a witness for a list reply)"),
    "live": ("kvmpt.cli.live", "check the model against /dev/kvm, calibrate costs"),
}

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``kvmpt replay: error: ...``)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    from kvmpt import __version__
    return __version__


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``kvmpt`` parser.  Subcommand modules are imported only for ``only``
    (every one when None), so ``kvmpt replay`` does not pay for ``kvmpt sweep``'s
    imports."""
    parser = _Parser(
        prog="kvmpt",
        description="kvmpt: an executable design review of Linux KVM's x86 page-track hooks "
                    "and Intel GVT-g's KVMGT.",
        epilog="Run 'kvmpt COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"kvmpt {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=summary)
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=getattr(mod, "HELP", summary),
                           description=getattr(mod, "HELP", summary))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kvmpt`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("KVMPT_DEBUG", "") not in ("", "0")
    first = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(only=first if first in SUBCOMMANDS else "")
    except Exception as exc:                      # a broken subcommand module
        if debug:
            raise
        print(f"kvmpt: error: cannot set up the command line: {exc}", file=sys.stderr)
        return 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                     # --help, --version, usage errors
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:                       # kvmpt ... | head
        return 0
    except KeyboardInterrupt:
        print("kvmpt: interrupted", file=sys.stderr)
        return 130
    except TimeoutError as exc:                   # e.g. a Dask cluster with no live worker
        if debug:
            raise
        print(f"kvmpt: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:          # bad input (kvmpt.infra.tomlfile.InputError & co.)
        if debug:
            raise
        print(f"kvmpt: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:                      # a bug: still one line, not a traceback
        if debug:
            raise
        print(f"kvmpt: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set KVMPT_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    msg = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OSError):
        if exc.strerror:
            msg = exc.strerror
        if exc.filename:
            msg = f"{exc.filename}: {msg}"
    return msg

