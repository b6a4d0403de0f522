"""``lit-infer``, the console entry point: ``lit-infer predict --config my.yaml``.

Light on purpose: ``--version`` and ``--help`` answer without importing torch or Lightning (``LitInferCLI`` loads on
first use). Every mistake in the user's settings ends as at most three lines on stderr and exit status 2;
``LIT_INFER_DEBUG=1`` shows the full traceback instead.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from lit_infer.cli.app import LitInferCLI

__all__ = ["LitInferCLI", "main"]

USAGE = """\
usage: lit-infer predict --config my.yaml [--section.key value ...]
       lit-infer predict --help [all]
       lit-infer merge OUTPUT_DIR   (a parts layout into one file; see docs/scaling.md)
       lit-infer --version

Predict with a convolutional network over a folder, list or table of images: one row per image in
outputs/<source name>/ (or writer.output_dir), resumable, exactly once. See README.md.
"""


def main(args: list[str] | None = None) -> None:
    """Console entry point."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["--version"], ["-V"]):
        print(version())
        return
    if argv[:1] in ([], ["-h"], ["--help"]):
        (sys.stdout if argv else sys.stderr).write(USAGE)
        if not argv:
            sys.exit(2)
        return
    if argv[0] == "merge":  # not a Lightning subcommand: no model, no trainer
        from lit_infer.merge_cmd import run

        run(argv[1:])
        return
    if argv[0] != "predict":
        close = difflib.get_close_matches(argv[0], ["predict"], n=1)
        hint = "Did you mean 'predict'? " if close else ""
        _fail([f"{argv[0]!r} is not a command. {hint}Usage: lit-infer predict --config my.yaml"])
    rest = argv[1:]
    if "-h" in rest or "--help" in rest:
        from lit_infer.cli.help import print_help

        print_help(rest)
        return
    _predict(rest)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    def of(name: str) -> str:
        try:
            return installed(name)
        except PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return f"lit-infer {of('lit_infer')} (lightning {of('lightning')}, torch {of('torch')}, python {python})"


def _predict(args: list[str]) -> None:
    # Before torch and Lightning load (seconds under load): a rank whose launcher dies stops, from its first moment.
    from lit_infer.lifecycle.process import LAUNCHER_ENV, announce_launcher, stand_down, watch_parent

    watch_parent()
    announce_launcher()
    debug = os.environ.get("LIT_INFER_DEBUG", "") not in ("", "0")
    try:
        try:
            from lit_infer.cli.app import LitInferCLI

            LitInferCLI(args=args)
        finally:
            stand_down()  # the run is over: rank 0 exiting first is no orphaning
            os.environ.pop(LAUNCHER_ENV, None)  # only for the ranks this run launched
    except KeyboardInterrupt:
        print("lit-infer: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        from lit_infer.cli.errors import explain

        outcome = explain(exc, args)
        if outcome is None:
            raise
        lines, code = outcome
        for line in lines[:3]:
            print(line, file=sys.stderr)
        sys.exit(code)
    if debug:
        print("lit-infer: done", file=sys.stderr)


def _fail(lines: list[str]) -> NoReturn:
    print(f"lit-infer: error: {lines[0]}", *lines[1:3], sep="\n", file=sys.stderr)
    sys.exit(2)


def __getattr__(name: str) -> Any:
    if name == "LitInferCLI":
        from lit_infer.cli.app import LitInferCLI

        return LitInferCLI
    raise AttributeError(f"module 'lit_infer.cli' has no attribute {name!r}")
