"""``lit-infer``, the console entry point: ``lit-infer predict --config my.yaml``.

Light on purpose: ``--version`` and ``--help`` answer without importing torch or Lightning (``LitInferCLI`` loads on
first use). Every mistake in the user's settings ends as at most three lines on stderr and exit status 2;
``LIT_INFER_DEBUG=1`` shows the full traceback instead.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from lit_infer.cli.app import LitInferCLI

__all__ = ["LitInferCLI", "main"]

USAGE = """\
usage: lit-infer predict --config my.yaml [--section.key value ...]
       lit-infer predict --help [all]
       lit-infer merge OUTPUT_DIR   (a parts layout into one file; see docs/scaling.md)
       lit-infer report OUTPUT_DIR  (report.html for a finished run: metrics, speed, failures)
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
    if argv[0] == "report":  # reads a finished run's files: no model, no trainer
        from lit_infer.report.command import run as report

        report(argv[1:])
        return
    if argv[0] != "predict":
        close = difflib.get_close_matches(argv[0], ["predict"], n=1)
        hint = "Did you mean 'predict'? " if close else ""
        _fail([f"{argv[0]!r} is not a command. {hint}Usage: lit-infer predict --config my.yaml"])
    rest = argv[1:]
    if "-h" in rest or "--help" in rest:
        _require_loadable_torchvision()
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
    previous = signal.getsignal(signal.SIGINT)
    try:
        _run_predict(args)
    finally:
        if threading.current_thread() is threading.main_thread() and previous is not None:
            signal.signal(signal.SIGINT, previous)  # main() called inside a longer-lived process (a test, a notebook)


def _run_predict(args: list[str]) -> None:
    debug = os.environ.get("LIT_INFER_DEBUG", "") not in ("", "0")
    interrupted = _catch_interrupts()
    cli = None
    try:
        # Inside the try, so that a Ctrl-C landing here too ends in the one line.
        # Before torch and Lightning load (seconds under load): a rank whose launcher dies stops, from its first moment.
        from lit_infer.lifecycle.process import LAUNCHER_ENV, announce_launcher, stand_down, watch_parent

        watch_parent()
        announce_launcher()
        # After the orphan watch and the Ctrl-C catch: importing torch takes seconds, and either may land in it.
        _require_loadable_torchvision()
        from lit_infer.system import count_from_process_start

        count_from_process_start()  # images/s "over the whole command" includes the imports and the parsing
        from lit_infer.cli.app import LitInferCLI

        try:
            cli = LitInferCLI(args=args, run=False)
            cli.predict()
        finally:
            stand_down()  # the run is over: rank 0 exiting first is no orphaning
            os.environ.pop(LAUNCHER_ENV, None)  # only for the ranks this run launched
    except BaseException as exc:
        if debug:
            raise
        if interrupted() or isinstance(exc, KeyboardInterrupt):
            # Ctrl-C can land anywhere, an import included; whatever it broke on the way out is its echo.
            started = cli is not None and cli.trainer.predict_loop.batch_progress.total.started > 0
            if started:
                what = "interrupted; every committed batch is kept: rerun the same command to resume"
            else:
                what = "interrupted before the first batch; nothing written"
            print(f"lit-infer: error: {what}", file=sys.stderr)
            sys.exit(130)
        if not isinstance(exc, Exception):
            raise
        from lit_infer.cli.errors import explain

        outcome = explain(exc, args)
        if outcome is None:
            raise
        lines, code = outcome
        for line in lines[:3]:
            print(line, file=sys.stderr)
        sys.exit(code)
    from lit_infer.cli.errors import nothing_predicted

    failed = nothing_predicted(cli.summary, cli.output_dir())
    if failed is not None:  # every rank exits 1, so that a scheduler marks the job failed; one prints
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0:
            print(failed, file=sys.stderr)
        sys.exit(1)
    if debug:
        print("lit-infer: done", file=sys.stderr)


def _require_loadable_torchvision() -> None:
    """An installed torchvision that cannot load (a build for another torch: ``operator torchvision::nms does not
    exist``) breaks every run, even one that never uses it: Lightning imports torchmetrics, which imports torchvision
    when it is installed. Try it first, so the user reads the fix instead of 50 lines of import traceback."""
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or os.environ.get("LIT_INFER_DEBUG", "") not in ("", "0"):
        return
    try:
        import torchvision  # noqa: F401
    except Exception as exc:
        from importlib.metadata import version as installed

        torch = installed("torch")
        major, minor = (int(x) for x in torch.split("+")[0].split(".")[:2])
        # torchvision 0.(m+15) is the release made for torch 2.m (0.19 for 2.4, 0.29 for 2.14).
        match = f"torchvision 0.{minor + 15}" if major == 2 else "the torchvision release made for it"
        where = os.path.dirname(spec.origin or "") or "sys.path"
        reason = " ".join(str(exc).split())[:120]
        _fail(
            [
                f"torchvision ({where}) cannot load beside torch {torch} ({type(exc).__name__}: {reason}): install "
                f"{match} built like this torch, from the index torch came from "
                "(pip install -c constraints.txt 'lit_infer[torchvision]'), or pip uninstall torchvision"
            ]
        )


def _catch_interrupts() -> Callable[[], bool]:
    """Ctrl-C during start-up (imports, parsing, building, planning) is remembered as well as raised, so that the
    error it causes, wherever it lands, reads as the interrupt. The run's own stop handler takes over from setup on."""
    caught: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
    return lambda: bool(caught)


def _fail(lines: list[str]) -> NoReturn:
    print(f"lit-infer: error: {lines[0]}", *lines[1:3], sep="\n", file=sys.stderr)
    sys.exit(2)


def __getattr__(name: str) -> Any:
    if name == "LitInferCLI":
        from lit_infer.cli.app import LitInferCLI

        return LitInferCLI
    raise AttributeError(f"module 'lit_infer.cli' has no attribute {name!r}")
