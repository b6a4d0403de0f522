"""``lit-infer predict --config my.yaml``: LightningCLI with prediction defaults and errors without tracebacks."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lit_infer import security
from lit_infer.callbacks import ImagesPerSecondBar, PredictionWriter
from lit_infer.callbacks.orphans import stand_down, watch_parent
from lit_infer.callbacks.stop import GracefulStop, StopRequested
from lit_infer.data import ImageDataModule
from lit_infer.errors import ConfigError, RunError
from lit_infer.lifecycle.finalize import finalize_run
from lit_infer.modules import PredictionModule


class _ArgumentParser(LightningArgumentParser):
    """On a bad option: the error naming the key and a pointer to ``--help``, not argparse's 60-line usage."""

    @override
    def print_usage(self, file: IO[str] | None = None) -> None:
        if file is not sys.stderr:
            return super().print_usage(file)
        prog = self.prog.replace(" [options]", "")
        prog = prog if prog.endswith("predict") else f"{prog} predict"
        sys.stderr.write(f"usage: {prog} --config my.yaml [--section.key value ...]\n")

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # A class path the import policy refuses: one line with the fix that works, not jsonargparse's Union dump.
        denied = security.explain_denied(message)
        if denied is not None and self.exit_on_error and not os.environ.get("LIT_INFER_DEBUG"):
            print(f"lit-infer: error: {denied}", file=sys.stderr)
            sys.exit(2)
        super().error(message, ex)


class LitInferCLI(LightningCLI):
    """LightningCLI for prediction only.

    Differences from the stock CLI: only the ``predict`` subcommand; ``return_predictions`` is off (predictions
    stream to files, none accumulate in memory); the writer is a top-level ``writer:`` section, always present; the
    model's preprocessing is linked into the data module (declared once); no logger, no model summary.
    """

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", PredictionModule)
        kwargs.setdefault("datamodule_class", ImageDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", None)
        kwargs.setdefault("seed_everything_default", False)  # prediction draws no random numbers
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault(
            "trainer_defaults",
            {
                "logger": False,
                "enable_model_summary": False,
                "enable_checkpointing": False,
                # cudnn picks the fastest convolution algorithms once: every batch has the same shape (last aside).
                "benchmark": True,
                "callbacks": [ImagesPerSecondBar()],
            },
        )
        kwargs.setdefault("parser_kwargs", {"predict": {"default_env": False}})
        kwargs.setdefault("parser_class", _ArgumentParser)
        # A config names classes to import and build: only the packages a prediction needs, plus the user's own
        # (LIT_INFER_ALLOW_IMPORTS), never os.system & co. Installed before parsing, which imports class paths, and
        # lifted afterwards: the process's other parsers are not ours to restrict.
        with security.enforced():
            super().__init__(args=args, **kwargs)

    @classmethod
    @override
    def subcommands(cls) -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "writer")
        # Lightning's predict loop ignores SIGTERM; this section makes every run stop at a batch boundary.
        parser.add_lightning_class_args(GracefulStop, "stop")
        parser.link_arguments("model.preprocessing", "data.init_args.preprocessing", apply_on="instantiate")

    # ---- the run: Lightning's loop, then finalize (LightningCLI's before_/after_<subcommand> hooks) ------------------
    def before_predict(self) -> None:
        self._writer().finalize_in_teardown = False

    def after_predict(self) -> None:
        # Only after a loop that returned: an exception (a stop signal, too many errors) skips this, as it should.
        finalize_run(self.trainer, self.model, self._writer())

    def _writer(self) -> PredictionWriter:
        return next(c for c in self.trainer.callbacks if isinstance(c, PredictionWriter))

    @override
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        if config.get("enable_progress_bar") is False:
            # Our default bar is a callback; with the bar switched off, Lightning would refuse it.
            defaults = self.trainer_defaults.get("callbacks") or []
            kept = [c for c in defaults if not isinstance(c, ImagesPerSecondBar)]
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": kept}
        return super()._instantiate_trainer(config, callbacks)

    @override
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # Lightning keeps every prediction in memory by default; ours go to files as they come.
        parser.set_defaults(return_predictions=False)
        return parser


def main(args: list[str] | None = None) -> None:
    """Console entry point. Errors in the user's settings print one message and exit 2, without a traceback."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation, not the user's
    watch_parent()  # a rank launched by rank 0 stops if rank 0 dies, from its first moment on
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["merge"]:  # not a Lightning subcommand: no model, no trainer
        from lit_infer.merge_cmd import run

        return run(argv[1:])
    try:
        with _run_then_stand_down():
            LitInferCLI(args=args)
    except StopRequested as exc:
        print(f"lit-infer: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (ConfigError, RunError) as exc:
        print(f"lit-infer: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, TypeError) as exc:
        # jsonargparse folds an error raised while building a class (data.source missing, model.weights unreadable)
        # into its own "Does not validate against any of the Union subtypes" ValueError; ours is its cause.
        cause = _user_error(exc)
        if cause is None:
            raise
        print(f"lit-infer: error: {cause}", file=sys.stderr)
        sys.exit(2)
    except (RuntimeError, OSError) as exc:
        message = _worker_died(exc)
        if message is None or os.environ.get("LIT_INFER_DEBUG"):
            raise
        print(f"lit-infer: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("lit-infer: interrupted", file=sys.stderr)
        sys.exit(130)
    if os.environ.get("LIT_INFER_DEBUG"):
        print("lit-infer: done", file=sys.stderr)


@contextlib.contextmanager
def _run_then_stand_down() -> Iterator[None]:
    try:
        yield
    finally:
        stand_down()  # the run is over: rank 0 exiting first is no orphaning


def _worker_died(exc: BaseException) -> str | None:
    """torch's "DataLoader worker (pid 42) is killed by signal: Killed." as one line that says what is kept. A worker
    killed while handing over a batch can surface, before torch notices the death, as the hand-over's own error
    (ConnectionRefusedError in multiprocessing's resource sharer): that is the same event."""
    text = str(exc)
    frames = traceback.extract_tb(exc.__traceback__) if isinstance(exc, OSError) else []
    handing_over = any(f.filename.endswith(("resource_sharer.py", "reductions.py")) for f in frames)
    if "DataLoader worker" not in text and not handing_over:
        return None
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
    return (
        f"a data loading worker died ({first}); often the out-of-memory killer. Every batch committed so far is kept: "
        "rerun the same command to resume, with fewer --data.num_workers or a smaller --data.batch_size"
    )


def _user_error(exc: BaseException) -> ConfigError | RunError | None:
    """The ConfigError or RunError behind ``exc`` (its cause or context chain), if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (ConfigError, RunError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":
    main()
