"""Errors a user can act on. The CLI prints these as one message, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ConfigError(ValueError):
    """A setting the user gave is wrong. The message names the key as typed (``data.source``), the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key = key
        self.value = value
        super().__init__(f"{key}={value!r}: {problem}. {fix}")


class RunError(RuntimeError):
    """The run cannot go on (too many bad inputs, an output directory from a different run, a stop signal)."""


class RankZeroRefused(RunError):
    """Rank 0's refusal as another rank receives it (the plan is decided on rank 0 and broadcast): it ends that rank
    too, and rank 0 alone prints it, so that a refusal is one line whatever the number of ranks."""


def run_command(main: Callable[[list[str]], None], argv: list[str]) -> None:
    """A subcommand's entry point (``lit-infer merge``, ``lit-infer report``) with the CLI's error contract: a user's
    mistake is one line on stderr and exit 2."""
    try:
        main(argv)
    except (ConfigError, RunError) as exc:
        print(f"lit-infer: error: {exc}", file=sys.stderr)
        sys.exit(2)
