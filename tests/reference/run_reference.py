"""The reference pipelines themselves, torchvision's and timm's, run on image files; results to an ``.npz``.

Run by the tests in a subprocess with ``.reference/`` (``make setup`` installs torchvision and timm there, pinned in
constraints.txt) first on ``PYTHONPATH``:

    python tests/reference/run_reference.py job.json out.npz

Why a subprocess and a separate folder: the torchvision wheels the registry has for torch 2.13 are CUDA builds.
Their compiled ops (``torchvision/_C.so``) link against CUDA torch libraries and do not load beside the CPU torch
pinned here; torchvision then fails at import, when ``torchvision/_meta_registrations.py`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms``, operators the missing library would have defined. The shim below
defines only those two operator *schemas* (no kernel: calling them still fails loudly); everything this script uses,
``torchvision.transforms`` and ``timm.data`` on PIL images, is pure Python on top of Pillow and torch, the very code
users run. Keeping that install out of ``.venv`` means no other test or subprocess imports a torchvision that only
works with the shim.

job.json: ``{"images": [path, ...], "pipelines": [spec, ...]}``, each spec one of
    {"kind": "torchvision", "resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [...], "std": [...]}
    {"kind": "timm_model", "model": "resnet18", "use_test_size": false}   (timm.create_model, random weights)
    {"kind": "timm_cfg", "model": "convnext_tiny.fb_in22k_ft_in1k_384"}   (the registered pretrained_cfg)
    {"kind": "timm_args", "args": {...}}                                     (resolve_data_config(args))
out.npz: ``crop_{i}_{j}`` (H x W x 3 uint8, the pipeline's PIL image before ToTensor) and ``tensor_{i}_{j}``
(C x H x W float32, the whole pipeline) for pipeline i and image j; ``cfg_{i}`` the JSON of the pretrained_cfg a
timm pipeline was resolved from (the tests hand it to lit_infer).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

_SHIM = torch.library.Library("torchvision", "DEF")  # kept alive: the schemas live as long as this object
_SHIM.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_SHIM.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import timm  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from timm.data import create_transform, resolve_data_config  # noqa: E402
from torchvision import transforms as T  # noqa: E402


def _pipeline(spec: dict) -> tuple[T.Compose, dict]:
    kind = spec["kind"]
    if kind == "torchvision":
        mode = T.InterpolationMode(spec["interpolation"])
        return T.Compose(
            [
                T.Resize(spec["resize"], interpolation=mode, antialias=True),
                T.CenterCrop(spec["crop"]),
                T.ToTensor(),
                T.Normalize(spec["mean"], spec["std"]),
            ]
        ), {}
    if kind == "timm_model":
        model = timm.create_model(spec["model"], pretrained=False)
        config = resolve_data_config({}, model=model, use_test_size=spec.get("use_test_size", False))
        return create_transform(**config), dict(model.pretrained_cfg)
    if kind == "timm_cfg":
        cfg = timm.models.get_pretrained_cfg(spec["model"]).to_dict()
        return create_transform(**resolve_data_config({}, pretrained_cfg=cfg)), cfg
    if kind == "timm_args":
        return create_transform(**resolve_data_config(spec["args"], pretrained_cfg={"input_size": (3, 224, 224)})), {}
    raise ValueError(f"unknown pipeline kind {kind!r}")


def _split(compose: T.Compose) -> tuple[list, list]:
    """The geometric transforms (PIL in, PIL out) and the rest (ToTensor, Normalize)."""
    names = [type(t).__name__ for t in compose.transforms]
    cut = next(i for i, n in enumerate(names) if n in ("ToTensor", "MaybeToTensor"))
    assert set(names[cut:]) <= {"ToTensor", "MaybeToTensor", "Normalize"}, names
    return compose.transforms[:cut], compose.transforms[cut:]


def main(job_path: str, out_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    out: dict[str, np.ndarray] = {}
    for i, spec in enumerate(job["pipelines"]):
        compose, cfg = _pipeline(spec)
        geometric, _ = _split(compose)
        out[f"cfg_{i}"] = np.array(json.dumps(cfg, default=list))
        out[f"repr_{i}"] = np.array(repr(compose))
        for j, path in enumerate(job["images"]):
            with Image.open(path) as opened:
                img = ImageOps.exif_transpose(opened).convert("RGB")
            crop = img
            for t in geometric:
                crop = t(crop)
            out[f"crop_{i}_{j}"] = np.asarray(crop, dtype=np.uint8)
            out[f"tensor_{i}_{j}"] = compose(img).numpy()
    out["versions"] = np.array(f"torchvision {torchvision.__version__}, timm {timm.__version__}")
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
