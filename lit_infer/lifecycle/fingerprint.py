"""The fingerprint of a run: everything that decides its outputs. A resumed run must match it exactly.

It covers the inputs' names (each unit's files by their versions are checked apart, per unit: see
``lit_infer/data/identity.py``), every setting that changes a prediction as the parts describe them (weights,
preprocessing, ``max_pixels``, labels, precision, ...), and the output options. :func:`differences` names
what changed, as dotted keys a user recognises (``data.decoding.max_pixels: 1000 -> 2000``), and :func:`refusal` says it in
one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def run_fingerprint(
    module: Any,
    datamodule: Any,
    num_items: int,
    output: dict[str, Any],
    trainer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What decides this run's outputs: the module's, the data's and the output options' own fingerprints.

    A part without a ``fingerprint()`` method is described by what is known of it (the module's class, the number of
    inputs). ``trainer``: the trainer's settings that change a prediction (precision, channels_last, compile). The
    result has the JSON shape of its stored copy (tuples become lists), so a resume compares equal.

    Example::

        run_fingerprint(module, datamodule, 100, {"format": "csv", "filename": "predictions"})
    """
    module_fp = module.fingerprint() if hasattr(module, "fingerprint") else {"module": type(module).__qualname__}
    data_fp = datamodule.fingerprint() if hasattr(datamodule, "fingerprint") else {"num_items": num_items}
    fingerprint = {"model": module_fp, "data": data_fp, "output": dict(output)}
    if trainer is not None:
        fingerprint["trainer"] = dict(trainer)
    return json.loads(json.dumps(fingerprint, default=str))


def differences(previous: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """What changed between two fingerprints, one entry per leaf: ``data.decoding.max_pixels: 1000 -> 2000``."""
    out: list[str] = []
    for key in sorted(set(previous) | set(current), key=str):
        name = f"{prefix}{key}"
        old, new = previous.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out.extend(differences(old, new, f"{name}."))
        else:
            out.append(f"{name}: {_short(old)} -> {_short(new)}")
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refusal(output_dir: str, changed: Sequence[str], limit: int = 4) -> str:
    """One line: the folder, what changed (the first few), and the two ways on."""
    shown = "; ".join(changed[:limit]) + (f"; and {len(changed) - limit} more" if len(changed) > limit else "")
    return (
        f"writer.output_dir={output_dir!r} holds a different run ({shown}). Rerun with the earlier settings to "
        "resume it, or start fresh with --writer.overwrite=true or another --writer.output_dir."
    )
