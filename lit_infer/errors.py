"""Errors a user can act on. The CLI prints these as one message, without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting the user gave is wrong. The message names the key as typed (``data.source``), the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key = key
        self.value = value
        super().__init__(f"{key}={value!r}: {problem}. {fix}")


class RunError(RuntimeError):
    """The run cannot go on (too many bad inputs, an output directory from a different run, a stop signal)."""
