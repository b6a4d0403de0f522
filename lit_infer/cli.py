"""``lit-infer predict --config my.yaml``: LightningCLI with prediction defaults and errors without tracebacks."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lit_infer.callbacks import ImagesPerSecondBar, PredictionWriter
from lit_infer.data import ImageDataModule
from lit_infer.errors import ConfigError, RunError
from lit_infer.modules import PredictionModule


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
                "callbacks": [ImagesPerSecondBar()],
            },
        )
        kwargs.setdefault("parser_kwargs", {"predict": {"default_env": False}})
        super().__init__(args=args, **kwargs)

    @classmethod
    @override
    def subcommands(cls) -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "writer")
        parser.link_arguments("model.preprocessing", "data.init_args.preprocessing", apply_on="instantiate")

    @override
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # Lightning keeps every prediction in memory by default; ours go to files as they come.
        parser.set_defaults(return_predictions=False)
        return parser


def main(args: list[str] | None = None) -> None:
    """Console entry point. Errors in the user's settings print one message and exit 2, without a traceback."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation, not the user's
    try:
        LitInferCLI(args=args)
    except (ConfigError, RunError) as exc:
        print(f"lit-infer: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("lit-infer: interrupted", file=sys.stderr)
        sys.exit(130)
    if os.environ.get("LIT_INFER_DEBUG"):
        print("lit-infer: done", file=sys.stderr)


if __name__ == "__main__":
    main()
