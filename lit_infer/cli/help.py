"""``lit-infer predict --help``: what a prediction needs, from the classes' docstrings; ``--help all``: everything."""

from __future__ import annotations

import sys

SHORT = {
    "data": ("source", "batch_size", "num_workers", "decoding.decode", "decoding.cache_dir"),
    "model": ("net", "factory", "weights", "class_names", "top_k", "preprocessing"),
    "writer": ("output_dir", "format", "overwrite"),
    "trainer": ("accelerator", "devices", "strategy", "precision", "num_nodes"),
}
"""The options a prediction needs, per section, in the order shown."""

OURS = " lit_infer adds dp, cpu_multiprocess and pipeline (docs/strategies.md)."


def print_help(args: list[str]) -> None:
    """The short help, or the full reference when ``all`` follows ``--help``."""
    flag = "--help" if "--help" in args else "-h"
    rest = args[args.index(flag) + 1 :]
    if rest[:1] == ["all"]:
        from lit_infer.cli.app import LitInferCLI

        LitInferCLI(args=[a for a in args if a != "all"], run=False)  # jsonargparse prints its help and exits
        return
    sys.stdout.write(short_help())


def short_help() -> str:
    import argparse

    from lightning.pytorch import Trainer

    from lit_infer.callbacks import PredictionWriter
    from lit_infer.cli.app import PROG
    from lit_infer.data import ImageDataModule
    from lit_infer.modules import ImageClassifier

    classes = {"data": ImageDataModule, "model": ImageClassifier, "writer": PredictionWriter, "trainer": Trainer}
    short = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} --config my.yaml [--section.key value ...]",
        description="The options a prediction needs; they go in the YAML config too (section: key: value). "
        "Every option: --help all. A class's own options: --model.help CLASS, --data.help CLASS.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    short.add_argument("-c", "--config", metavar="FILE", help="A YAML config; several combine, later ones win.")
    for section, keys in SHORT.items():
        group = short.add_argument_group(section)
        parser = _class_parser(classes[section], section)
        actions = {a.dest: a for a in parser._actions}  # argparse keeps them there; jsonargparse does the same
        for key in keys:
            action = actions.get(f"{section}.{key}")
            if action is not None:
                text = _first_lines(action.help) + (OURS if key == "strategy" else "")
                group.add_argument(f"--{section}.{key}", metavar=_metavar(action), help=text)
    misc = short.add_argument_group("other")
    misc.add_argument("--print_config", action="store_true", help="Print the resolved config and exit.")
    misc.add_argument("-h", "--help", action="store_true", help="This help; --help all for every option.")
    return short.format_help()


def _class_parser(cls: type, key: str) -> object:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(cls, key, fail_untyped=False)
    return parser


def _metavar(action: object) -> str:
    """Choices as they are spelled in a config (``{csv,jsonl,...}``, jsonargparse's metavar); a type in capitals."""
    choices = getattr(action, "choices", None)
    if choices:
        return "{" + ",".join(str(c) for c in choices) + "}"
    metavar = getattr(action, "metavar", None)
    if isinstance(metavar, str) and metavar.startswith("{"):
        return metavar
    kind = metavar or getattr(getattr(action, "type", None), "__name__", None)
    return str(kind).upper() if kind else "VALUE"


def _first_lines(text: str | None) -> str:
    if not text:
        return ""
    text = text.replace("%", "%%")
    return " ".join(text.split()).split(" (type:")[0]
