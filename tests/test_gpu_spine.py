"""On a CUDA device: our preprocessing equals torchvision's eval pipeline, and a torchvision ResNet given by factory
path predicts what a plain torchvision loop predicts. Skipped without CUDA (and without torchvision)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lit_infer import ImageClassifier, ImageDataModule, PredictionModule, PredictionWriter, Preprocessing
from lit_infer.data.decode import Decoder
from lit_infer.records import Batch

pytestmark = pytest.mark.gpu

P = Preprocessing(crop_size=224, resize_size=256, interpolation="bilinear")


def _photos(root: Path, n: int = 24) -> list[Path]:
    """Photo-like JPEGs and PNGs of several sizes and aspect ratios (smooth shapes, gradients, sensor noise)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = [(500, 375), (375, 500), (640, 427), (1024, 768), (300, 300), (333, 500)]
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w] / max(w, h)
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        blob = ((x - cx) ** 2 + (y - cy) ** 2 < r**2)[..., None] * rng.uniform(0, 255, 3)
        base = np.stack([x * rng.uniform(50, 255), y * rng.uniform(50, 255), (1 - x) * rng.uniform(50, 255)], -1)
        arr = np.clip(0.6 * base + 0.4 * blob + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        fmt = "jpg" if i % 3 else "png"
        path = root / f"photo_{i:03d}.{fmt}"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def _torchvision_transform() -> object:
    transforms = pytest.importorskip("torchvision.transforms")
    return transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


def test_preprocessing_on_the_gpu_matches_torchvision(tmp_path: Path) -> None:
    tv = _torchvision_transform()
    module = PredictionModule(factory="torch.nn.Identity", preprocessing=P).to("cuda")
    decoder = Decoder(P)
    for path in _photos(tmp_path / "photos", 12):
        ours_u8 = decoder(str(path)).permute(2, 0, 1).unsqueeze(0)
        ours = module.preprocess(Batch(ours_u8, torch.tensor([0]), [str(path)], torch.tensor([-1])))
        assert ours.device.type == "cuda"
        with Image.open(path) as img:
            expected = tv(img.convert("RGB")).unsqueeze(0)  # type: ignore[operator]
        # Within rounding: one uint8 level is 1 / 255 / std (< 0.018) after normalisation, and rarely that.
        torch.testing.assert_close(ours.cpu(), expected, atol=0.018, rtol=0)
        assert (ours.cpu() - expected).abs().mean() < 0.5 / 255 / 0.224  # under half a level on average


def test_torchvision_resnet_by_factory_path_predicts_like_a_plain_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = pytest.importorskip("torchvision.models")
    # fp32 on both sides: TF32 convolutions differ by about 1e-3 relative, the size of a near-tie below.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    tv = _torchvision_transform()
    paths = _photos(tmp_path / "photos", 24)

    torch.manual_seed(0)
    reference_net = models.resnet18(weights=None, num_classes=10).eval()
    weights = tmp_path / "resnet18.pth"
    torch.save(reference_net.state_dict(), weights)

    # The plain torchvision loop.
    reference_net = reference_net.cuda()
    with torch.inference_mode():
        x = torch.stack([tv(Image.open(p).convert("RGB")) for p in paths]).cuda()  # type: ignore[operator]
        logits = reference_net(x).float().cpu()
    expected = logits.argmax(1).tolist()

    # lit_infer: the same network by factory path, through the Trainer and the writer.
    module = ImageClassifier(
        factory="torchvision.models.resnet18",
        factory_kwargs={"weights": None, "num_classes": 10},
        weights=str(weights),
        preprocessing=P,
    )
    writer = PredictionWriter(tmp_path / "out")
    data = ImageDataModule(tmp_path / "photos", batch_size=8, num_workers=2, preprocessing=P)
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, callbacks=[writer], enable_progress_bar=False)
    trainer.predict(module, datamodule=data, return_predictions=False)
    assert data.predict_dataloader().pin_memory  # on by default when predicting on CUDA
    with (tmp_path / "out" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in sorted(paths)]
    order = [paths.index(Path(r["path"])) for r in rows]
    got = [int(r["pred"]) for r in rows]
    want = [expected[i] for i in order]
    # Same classes wherever the reference is not a near-tie (random weights give close logits sometimes).
    top2 = logits.topk(2, dim=1).values
    # Pixels agree within one level (see above), which can move random-weight logits by more than 1e-3.
    clear = [(top2[i, 0] - top2[i, 1]).item() > 2e-2 for i in order]
    assert all(g == w for g, w, c in zip(got, want, clear, strict=True) if c)
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 0.9 * len(rows)
