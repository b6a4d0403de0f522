"""The fingerprint of a run: everything that decides its outputs. A resumed run must match it exactly."""

from __future__ import annotations

import json
from typing import Any


def run_fingerprint(module: Any, datamodule: Any, num_items: int, output: dict[str, Any]) -> dict[str, Any]:
    """What decides this run's outputs: the module's, the data's and the output options' own fingerprints.

    A part without a ``fingerprint()`` method is described by what is known of it (the module's class, the number of
    inputs). The result has the JSON shape of its stored copy (tuples become lists), so a resume compares equal.

    Example::

        run_fingerprint(module, datamodule, 100, {"format": "csv", "filename": "predictions"})
    """
    module_fp = module.fingerprint() if hasattr(module, "fingerprint") else {"module": type(module).__qualname__}
    data_fp = datamodule.fingerprint() if hasattr(datamodule, "fingerprint") else {"num_items": num_items}
    return json.loads(json.dumps({"model": module_fp, "data": data_fp, "output": dict(output)}))


def changed_sections(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The top-level sections (``model``, ``data``, ``output``) in which two fingerprints differ."""
    return sorted(k for k in current if previous.get(k) != current[k])
