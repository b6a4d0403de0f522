"""The error budget: how many inputs may fail (corrupt, unreadable, refused) before the run counts as failed.

``writer.max_errors`` is a count (``10``) or a fraction of the inputs (``0.01``). Failures are always recorded in
``errors.jsonl`` and the outputs are always written; the budget decides only whether the run then fails, so the user
can read what went wrong. A rerun of a finished run checks the budget again (a raised budget lets it pass).
"""

from __future__ import annotations

import math

from lit_infer.errors import ConfigError, RunError

KEY = "writer.max_errors"


class TooManyErrors(RunError):
    """More inputs failed than ``writer.max_errors`` allows."""


def check_max_errors(value: int | float | None) -> int | float | None:
    """Validate a budget and return it normalised: ``None`` (no limit), a count (``int >= 0``; a whole float of 1 or
    more, as a command line may give it, counts too) or a fraction (``float`` in ``[0, 1)``)."""
    if value is None:
        return None
    fix = "Give a count of inputs (e.g. 10), a fraction of them (e.g. 0.01), or null for no limit"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(KEY, value, "must be a number", fix)
    if value < 0:
        raise ConfigError(KEY, value, "must be 0 or more", fix)
    if isinstance(value, int):
        return value
    if value >= 1:
        if not value.is_integer():
            raise ConfigError(KEY, value, "is neither a whole count nor a fraction below 1", fix)
        return int(value)
    return value


def allowed_failures(max_errors: int | float | None, num_items: int) -> int | None:
    """How many failures the budget allows over ``num_items`` inputs; ``None`` for no limit."""
    if max_errors is None:
        return None
    if isinstance(max_errors, int):
        return max_errors
    return math.floor(max_errors * num_items)


def over_budget(num_failed: int, num_items: int, max_errors: int | float | None) -> bool:
    allowed = allowed_failures(max_errors, num_items)
    return allowed is not None and num_failed > allowed


def too_many_errors(num_failed: int, num_items: int, max_errors: int | float | None, where: str) -> TooManyErrors:
    """The error to raise; ``where`` says where the user reads the failures (``errors.jsonl``, or the first ones)."""
    allowed = allowed_failures(max_errors, num_items)
    return TooManyErrors(
        f"{num_failed} of {num_items} inputs failed, more than {KEY}={max_errors!r} allows ({allowed}); "
        f"{where}. Fix or remove those files, or raise {KEY}"
    )
