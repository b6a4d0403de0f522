"""What a network returns, and which part of it is the prediction: tensors, tuples, lists, dicts (``model.output``);
what a ``predict_step`` may return to the writer; and the input a network refused.

Many trained networks return more than one thing (a face detector's boxes, landmarks and scores; a model with an
auxiliary head). Nothing here guesses: either ``model.output`` names the element, or the whole structure is
written, or a module that needs one tensor refuses with a line that shows what the network returned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lit_infer.errors import ConfigError, RunError
from lit_infer.records import Batch, Predictions
from lit_infer.system import is_out_of_memory


def describe_output(outputs: Any) -> str:
    """What a network returned, in a few words: types, shapes, keys (for error messages)."""
    if isinstance(outputs, torch.Tensor):
        return f"Tensor {'x'.join(str(d) for d in outputs.shape) or 'scalar'}"
    if isinstance(outputs, Mapping):
        parts = ", ".join(f"{k!r}: {describe_output(v)}" for k, v in list(outputs.items())[:8])
        return f"a {type(outputs).__name__} of {len(outputs)} ({parts})"
    if isinstance(outputs, (tuple, list)):
        fields = getattr(outputs, "_fields", None)
        names = [repr(f) for f in fields] if fields else [str(i) for i in range(len(outputs))]
        parts = ", ".join(f"[{n}] {describe_output(v)}" for n, v in list(zip(names, outputs, strict=True))[:8])
        return f"a {type(outputs).__name__} of {len(outputs)} ({parts})"
    return type(outputs).__name__


def output_choices(outputs: Any) -> list[int | str]:
    """The values ``model.output`` may take for this output."""
    if isinstance(outputs, Mapping):
        return list(outputs.keys())
    if isinstance(outputs, (tuple, list)):
        fields = getattr(outputs, "_fields", None)
        return list(fields) if fields else list(range(len(outputs)))
    return []


def select_output(outputs: Any, output: int | str | None) -> Any:
    """The element ``output`` names (an index of a tuple/list, a key of a dict or a namedtuple field); ``None``: all."""
    if output is None:
        return outputs
    found = _MISSING
    if isinstance(outputs, Mapping):
        found = outputs.get(output, _MISSING)
    elif isinstance(outputs, Sequence) and not isinstance(outputs, (str, torch.Tensor)):
        if isinstance(output, int) and -len(outputs) <= output < len(outputs):
            found = outputs[output]
        elif isinstance(output, str) and output in (getattr(outputs, "_fields", None) or ()):
            found = getattr(outputs, output)
    if found is _MISSING:
        options = output_choices(outputs)
        fix = f"Set model.output to one of {options}" if options else "Leave model.output unset (null)"
        raise ConfigError("model.output", output, f"the network returned {describe_output(outputs)}", fix)
    return found


def per_image(outputs: Any, rows: int) -> bool:
    """Whether ``outputs`` holds one element per image (torchvision's detection contract) rather than one column per
    element: a ``list`` of ``rows`` dicts, or of ``rows`` tensors that are not all ``rows`` long (batch-major
    columns are; a list of tensors that happen to be is taken for columns, as before)."""
    if not isinstance(outputs, list) or len(outputs) != rows or rows == 0:
        return False
    if all(isinstance(o, Mapping) for o in outputs):
        return True
    tensors = all(isinstance(o, torch.Tensor) for o in outputs)
    return tensors and not all(o.ndim > 0 and o.shape[0] == rows for o in outputs)


def per_image_columns(outputs: list[Any], prefix: str = "output") -> dict[str, Any]:
    """One element per image as columns: a list of dicts gives ``output_<key>``, a list of tensors ``output``.

    A per-image value of shape ``k x ...`` is a ragged column (``k`` varies, no padding); a scalar per image is an
    ordinary column.
    """
    if isinstance(outputs[0], Mapping):
        keys = list(outputs[0])
        odd = next((o for o in outputs if list(o) != keys), None)
        if odd is not None:
            raise ConfigError(
                "model.output",
                None,
                f"the network returned per-image dicts with different keys ({keys} and {list(odd)})",
                "Override postprocess to turn them into columns",
            )
        out: dict[str, Any] = {}
        for key in keys:
            out.update(per_image_columns([o[key] for o in outputs], f"{prefix}_{key}"))
        return out
    odd = next((o for o in outputs if not isinstance(o, torch.Tensor)), None)
    if odd is not None:
        raise ConfigError(
            "model.output",
            None,
            f"the network returned per-image {describe_output(odd)}, not tensors",
            "Override postprocess to turn it into columns",
        )
    values = [o.detach().float() if o.is_floating_point() else o.detach() for o in outputs]
    if all(v.ndim == 0 for v in values):
        return {prefix: torch.stack(values)}
    return {prefix: [v if v.ndim > 0 else v.reshape(1) for v in values]}


def output_columns(outputs: Any, prefix: str = "output", rows: int | None = None) -> dict[str, Any]:
    """The whole output as named columns: a tensor is ``output``; a tuple/list gives ``output_0``, ``output_1``...;
    a dict (or namedtuple) gives ``output_<key>``; nested structures nest the names. With ``rows`` (the batch
    size), a list with one element per image (:func:`per_image`) gives ragged columns (:func:`per_image_columns`)."""
    if rows is not None and per_image(outputs, rows):
        return per_image_columns(outputs, prefix)
    if isinstance(outputs, torch.Tensor):
        return {prefix: outputs.detach().float()}
    names = output_choices(outputs)
    if not names and not isinstance(outputs, (Mapping, tuple, list)):
        raise ConfigError(
            "model.output",
            None,
            f"the network returned {describe_output(outputs)}, which is not a tensor, tuple, list or dict",
            "Override postprocess to turn it into columns",
        )
    out: dict[str, Any] = {}
    for name in names:
        value = outputs[name] if isinstance(outputs, Mapping) or isinstance(name, int) else getattr(outputs, name)
        out.update(output_columns(value, f"{prefix}_{name}", rows))
    return out


_MISSING = object()

RETURN_HINT = (
    "Return lit_infer.Predictions, a tensor with one row per image, a dict of such columns, or a list of one dict "
    "per image (or override postprocess instead of predict_step)"
)


def as_predictions(outputs: Any, batch: Any) -> Predictions:
    """What a ``predict_step`` returned, as :class:`Predictions` of ``batch``: research code's natural returns too.

    A tensor with one row per image is the column ``output``; a dict of such columns (tensors, arrays or lists) keeps
    its keys; a list of one dict per image is stacked key by key. Anything else is a :class:`RunError` saying what
    to return.

    Example::

        as_predictions({"logits": logits, "label": labels}, batch)
    """
    if isinstance(outputs, Predictions):
        return outputs
    if not isinstance(batch, Batch):
        raise RunError(f"predict_step returned {describe_output(outputs)} for a batch that is not lit_infer's Batch")
    rows = len(batch)
    columns: dict[str, Any] | None = None
    if isinstance(outputs, torch.Tensor) and outputs.ndim >= 1:
        columns = {"output": outputs.detach()}
    elif isinstance(outputs, Mapping) and outputs and all(isinstance(k, str) for k in outputs):
        columns = {k: _column(v) for k, v in outputs.items()}
    elif isinstance(outputs, list) and len(outputs) == rows and all(isinstance(o, Mapping) for o in outputs):
        keys = list(outputs[0]) if outputs else []
        if all(list(o) == keys for o in outputs):
            columns = {str(k): _column([o[k] for o in outputs]) for k in keys}
    if columns is None or any(c is None or len(c) != rows for c in columns.values()):
        raise RunError(f"predict_step returned {describe_output(outputs)} for a batch of {rows} images. {RETURN_HINT}")
    return Predictions(batch.indices.numpy(), batch.paths, columns, batch.failures)


def _column(value: Any) -> Any:
    """One column, one entry per image: a tensor or array as it is, a list of tensors stacked, else a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach() if value.ndim >= 1 else None
    if isinstance(value, np.ndarray):
        return value if value.ndim >= 1 else None
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, torch.Tensor) for v in value):
            return torch.stack([v.detach() for v in value])
        return np.asarray(value)
    return None


_SHAPE_ERROR = re.compile(
    r"shapes cannot be multiplied|size mismatch|Kernel size can't be greater|is invalid for input of size"
    r"|must match the size of tensor|doesn't match model|to have \d+ channels"
)
"""What torch (and timm's asserts) say when a network cannot take the input's size or channels."""


def refuse_rejected_input(exc: BaseException, x: torch.Tensor, crop_size: int) -> None:
    """Raise the error that names ``model.preprocessing.crop_size`` when a network failed on the input's shape;
    every batch has the same C x H x W, so a network built for another input size fails on the first."""
    if not _SHAPE_ERROR.search(str(exc)) or is_out_of_memory(exc):
        return
    raise ConfigError(
        "model.preprocessing.crop_size",
        crop_size,
        f"the network rejected a {' x '.join(map(str, x.shape[1:]))} input "
        f"({(str(exc).strip().splitlines() or [''])[0][:160]})",
        "Set model.preprocessing.crop_size (and resize_size) to the input size the network was built for",
    ) from exc


def blank_input(module: Any) -> torch.Tensor:
    """One blank image as a prediction module's network sees it (size, dtype, device, layout): what a module probes
    the network's output with before the first batch."""
    size = module.preprocessing.crop_size
    x = torch.zeros(1, 3, size, size, dtype=module.input_dtype, device=module.device)
    return x.contiguous(memory_format=torch.channels_last if module.use_channels_last else torch.contiguous_format)
