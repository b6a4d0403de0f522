"""``LitInferCLI``: LightningCLI for prediction, built through its public hooks only."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from typing import IO, Any, NoReturn

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lit_infer import own_code, quiet, security
from lit_infer.callbacks import ImagesPerSecondBar, PredictionWriter
from lit_infer.callbacks.start import StartLine
from lit_infer.callbacks.stop import GracefulStop
from lit_infer.callbacks.timings import BatchTimings
from lit_infer.cli.checks import accelerator_available, no_null_groups, trainer_names
from lit_infer.cli.messages import Problem, digest
from lit_infer.cli.paths import PATH_KEYS, command_line_values, expand_paths
from lit_infer.cli.trust import check_config
from lit_infer.data import ImageDataModule
from lit_infer.lifecycle.process import launched_nodes
from lit_infer.modules import PredictionModule
from lit_infer.run import predict as run_lifecycle

PROG = "lit-infer predict"


class UsageError(Exception):
    """A mistake in the command line or config that jsonargparse found, digested to the key, value and fix."""

    def __init__(self, problem: Problem, message: str) -> None:
        self.problem = problem
        super().__init__(message)  # jsonargparse's full text, for a traceback under LIT_INFER_DEBUG


class _ArgumentParser(LightningArgumentParser):
    """jsonargparse's errors become a :class:`UsageError` (one line, the key as typed), not a usage wall."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # an inner parser: jsonargparse catches this and nests it in its message
        denied = security.explain_denied(message)  # a class path the import policy refuses, with the fix that works
        if denied is not None:
            raise denied from ex
        raise UsageError(digest(message, init_options, root_options(self)), message) from ex

    @override
    def print_usage(self, file: IO[str] | None = None) -> None:
        (file or sys.stdout).write(f"usage: {PROG} --config my.yaml [--section.key value ...]\n")


def follow_the_launch(trainer: Any) -> None:
    """Under torchrun, ``trainer.num_nodes`` is the number of nodes its rendezvous gathered: with elastic membership
    (``--nnodes 1:2``) a restart after a node was lost has fewer than the config says, and Lightning would refuse."""
    nodes = launched_nodes()
    if nodes is None or trainer is None or trainer.get("num_nodes") in (None, nodes):
        return
    if os.environ.get("RANK", "0") == "0":
        print(f"lit-infer: torchrun gathered {nodes} node(s): trainer.num_nodes {trainer['num_nodes']} -> {nodes}")
    trainer["num_nodes"] = nodes


def init_options(class_path: str) -> list[str]:
    """The ``__init__`` arguments a class path takes (through ``**kwargs`` to its bases, as jsonargparse does), and
    those of its groups of options as dotted names (``decoding.exact`` for a ``decoding: Decoding`` dataclass)."""
    module, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)  # only what jsonargparse already imported
    names: list[str] = []
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else ():
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            names.append(p.name)
            if dataclasses.is_dataclass(p.default):  # a group of options, its defaults an instance
                names += [f"{p.name}.{f.name}" for f in dataclasses.fields(p.default)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def root_options(parser: LightningArgumentParser) -> list[str]:
    """The keys of the whole config (``writer.format``, ``trainer.devices``...), for did-you-mean."""
    return [key for key in parser.get_defaults().keys() if key != "__default_config__"]  # noqa: SIM118


def resolved_config(parser: LightningArgumentParser, config: Namespace) -> str | None:
    """The config as parsed, for the run's report (as Lightning's SaveConfigCallback dumps it)."""
    try:
        return parser.dump(config, skip_none=False)
    except Exception:  # a config jsonargparse cannot write back: the report says "not recorded"
        return None


class LitInferCLI(LightningCLI):
    """LightningCLI for prediction only: ``LitInferCLI(args=["--config", "my.yaml"])`` builds and predicts.

    Differences from the stock CLI: no subcommands to parse (``lit-infer predict`` is the only one; a leading
    ``"predict"`` in ``args`` is accepted and dropped); predictions stream to files and none accumulate in memory
    (``Trainer.predict(return_predictions=False)``); ``--ckpt_path`` is refused (weights go in ``model.weights``);
    the writer is a top-level ``writer:`` section, always present; the model's preprocessing is linked into the data
    module (declared once); no logger, no model summary, no Lightning banners. ``run=False`` builds without
    predicting; :meth:`predict` runs it.
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, list) and args[:1] == ["predict"]:
            args = args[1:]  # the subcommand's name, as typed on the command line
        # What the user typed, as opposed to what a config file says (docs/robustness.md: a config may come from
        # someone else). A Python caller's dict or Namespace is its own.
        self.given = command_line_values(args) if isinstance(args, list) else None
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
            },
        )
        kwargs.setdefault("parser_kwargs", {"default_env": False, "prog": PROG})
        kwargs.setdefault("parser_class", _ArgumentParser)
        quiet.install()
        # A config names classes to import and build: only the packages a prediction needs, plus the user's own,
        # never os.system & co. Installed before parsing, which imports class paths, and lifted afterwards: the
        # process's other parsers are not ours to restrict.
        with security.enforced(own_code.named_modules(args, PATH_KEYS)):
            super().__init__(args=args, run=False, **kwargs)
        self.summary: dict[str, Any] | None = None
        """The run's summary once :meth:`predict` has run (``lit-infer predict`` decides its exit status from it)."""
        if run:
            self.predict()

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "writer")
        # Lightning's predict loop ignores SIGTERM; this section makes every run stop at a batch boundary.
        parser.add_lightning_class_args(GracefulStop, "stop")
        parser.link_arguments("model.preprocessing", "data.init_args.preprocessing", apply_on="instantiate")

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # The stock method warns when both args and sys.argv are given; main() hands sys.argv over on purpose.
        self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)

    @override
    def before_instantiate_classes(self) -> None:
        # Lightning's own checks come as 30-line tracebacks from inside the Trainer; these name the key.
        trainer_names(self.config.get("trainer") or {})
        no_null_groups(self.config)
        expand_paths(self.config, self.given)
        check_config(self.config, self.given)
        follow_the_launch(self.config.get("trainer"))

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = self.config_init.get("trainer") or {}
        accelerator_available(trainer)
        if "callbacks" not in kwargs:
            given = trainer.get("callbacks") or []
            ours: list[Any] = [StartLine(), BatchTimings(config=resolved_config(self.parser, self.config))]
            if trainer.get("enable_progress_bar") is not False:
                ours.append(ImagesPerSecondBar())  # with the bar switched off, Lightning would refuse a bar
            kwargs["callbacks"] = [*(given if isinstance(given, list) else [given]), *ours]
        return super().instantiate_trainer(**kwargs)

    def predict(self) -> dict[str, Any]:
        """What ``lit-infer predict`` runs once everything is built: the run's lifecycle, as ``lit_infer.predict``
        (``Trainer.predict`` streaming to the writer, then finalize); returns the summary."""
        self.summary = run_lifecycle(self.model, self.datamodule, trainer=self.trainer)
        return self.summary

    def output_dir(self) -> str | None:
        """Where the writer wrote (after :meth:`predict`)."""
        writers = [c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)]
        return writers[0].output_dir if writers else None
