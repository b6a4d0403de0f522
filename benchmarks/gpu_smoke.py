"""``lit-infer predict`` end to end in each GPU configuration, on one corpus with odd and broken files.

For the first minutes on a GPU machine: every configuration runs as a user runs it (the CLI, a real process), and
each output is checked against the plain single-device run: the same inputs predicted, the same error records,
and how often the top class agrees (bf16 moves near-ties). ``--device cpu`` runs the CPU configurations, to check
this script itself anywhere::

    python -m benchmarks.gpu_smoke --out /tmp/smoke            # on the H200
    python -m benchmarks.gpu_smoke --out /tmp/smoke --device cpu
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.harness import make_jpegs

REPO = Path(__file__).resolve().parent.parent


def strategy(name: str, devices: list[str], **init_args: object) -> dict:
    return {"class_path": f"lit_infer.{name}", "init_args": {"devices": devices, **init_args}}


def runs(device: str) -> dict[str, object]:
    """Name -> extra config (a dict merged over the base, or a shipped YAML file)."""
    if device == "cpu":
        return {
            "single": {"trainer": {"accelerator": "cpu", "devices": 1}},
            "ddp_yaml": "configs/strategy/ddp.yaml",
            "dp": {"trainer": {"accelerator": "cpu", "strategy": strategy("DataParallelStrategy", ["cpu", "cpu"])}},
            "pipeline": {"trainer": {"accelerator": "cpu", "strategy": strategy("PipelineStrategy", ["cpu", "cpu"])}},
            "parts": {"trainer": {"accelerator": "cpu", "devices": 1}, "writer": {"layout": "parts"}},
        }
    gpu = {"accelerator": "gpu", "devices": 1}
    return {
        "single": {"trainer": gpu},
        "bf16_mixed": {"trainer": {**gpu, "precision": "bf16-mixed"}},
        "decode_gpu": {"trainer": gpu, "data": {"decoding": {"decode": "gpu"}}},
        "ddp_gpu_yaml": "configs/strategy/ddp_gpu.yaml",  # nccl on every GPU, bf16-true
        "dp_cuda0_twice": {
            "trainer": {"accelerator": "gpu", "strategy": strategy("DataParallelStrategy", ["cuda:0", "cuda:0"])}
        },
        "pipeline_gpu_cpu": {
            "trainer": {"accelerator": "gpu", "strategy": strategy("PipelineStrategy", ["cuda:0", "cpu"])}
        },
        "parts": {"trainer": gpu, "writer": {"layout": "parts"}},  # per-unit parts, then `lit-infer merge`
        "compile": {"trainer": gpu, "model": {"compile": True}},  # last: the slowest to start
    }


def make_corpus(folder: Path, n: int) -> dict[str, str]:
    """``n`` photo-like JPEGs plus odd files (name -> what it is); the broken ones must end as error records."""
    make_jpegs(folder, n, (500, 375))
    flat = np.full((300, 400, 3), 120, dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: nvJPEG would return it sideways, so the workers decode it
    Image.fromarray(flat).save(folder / "odd_rotated.jpg", exif=exif.tobytes())
    Image.fromarray(flat).convert("CMYK").save(folder / "odd_cmyk.jpg")
    Image.fromarray(flat).save(folder / "odd_plain.png")
    buf = io.BytesIO()
    Image.fromarray(flat).save(buf, "JPEG", progressive=True)
    (folder / "odd_progressive.jpg").write_bytes(buf.getvalue())
    (folder / "odd_truncated.jpg").write_bytes((folder / "img_000000.jpg").read_bytes()[:5000])
    (folder / "odd_garbage.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(2000))
    return {"odd_truncated.jpg": "broken", "odd_garbage.jpg": "broken"}


def run(name: str, extra: object, corpus: Path, out: Path) -> dict:
    """One ``lit-infer predict`` process: the quickstart's model over ``corpus`` with ``extra`` on top."""
    sections: dict = {
        "data": {"init_args": {"source": str(corpus), "batch_size": 64, "num_workers": min(8, os.cpu_count() or 1)}},
        "model": {"init_args": {}},
        "writer": {"output_dir": str(out / name), "overwrite": True},
    }
    sections["writer"].update(extra.pop("writer", {}) if isinstance(extra, dict) else {})
    args = [sys.executable, "-m", "lit_infer", "predict", "--config", "configs/quickstart.yaml"]
    if isinstance(extra, str):
        args += ["--config", extra]  # a shipped strategy file, as users combine them
    else:
        assert isinstance(extra, dict)
        for key, value in extra.items():
            if key in ("data", "model"):
                sections[key]["init_args"].update(value)
            else:
                sections[key] = value
    config = out / f"{name}.json"  # JSON is YAML
    config.write_text(json.dumps(sections))
    args += ["--config", str(config)]
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if proc.returncode == 0 and sections["writer"].get("layout") == "parts":
        merged = subprocess.run(
            [sys.executable, "-m", "lit_infer", "merge", str(out / name)], cwd=REPO, capture_output=True, text=True
        )
        proc = subprocess.CompletedProcess(
            args, merged.returncode, proc.stdout + merged.stdout, proc.stderr + merged.stderr
        )
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    result: dict = {"run": name, "rc": proc.returncode, "seconds": round(time.perf_counter() - started, 1)}
    if proc.returncode != 0:
        result["tail"] = (proc.stdout + proc.stderr)[-1500:]
        return result
    with open(out / name / "predictions.csv", newline="") as f:
        result["rows"] = {Path(r["path"]).name: r["pred"] for r in csv.DictReader(f)}
    errors = out / name / "errors.jsonl"
    lines = errors.read_text().splitlines() if errors.exists() else []
    result["errors"] = sorted(Path(json.loads(line)["path"]).name for line in lines)
    return result


def detector_runs(corpus: Path, out: Path, device: str) -> list[dict]:
    """The shipped detector config (random seeded weights, no downloads) on the first 24 images and the odd files,
    on ``device`` and on the CPU: the same inputs and error records, and the top box's score per image compared."""
    import shutil

    import torch
    import torchvision

    small = out / "corpus_small"
    small.mkdir(exist_ok=True)
    for f in sorted(corpus.iterdir())[:24] + sorted(corpus.glob("odd_*")):
        shutil.copy(f, small / f.name)
    torch.manual_seed(0)
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=91
    )
    weights = out / "detector.pth"
    torch.save(net.state_dict(), weights)
    results = []
    # One run on a CPU-only check (the two names are one).
    for name, accelerator in {"detect_cpu": "cpu", f"detect_{device}": "gpu" if device == "cuda" else "cpu"}.items():
        args = [
            sys.executable,
            "-m",
            "lit_infer",
            "predict",
            "--config",
            "configs/task/detect_torchvision.yaml",
            "--model.init_args.weights",
            str(weights),
            "--model.init_args.score_threshold",
            "0.0",
            "--model.init_args.images_per_call",  # the same calls on both: what differs is the device alone
            "1",
            "--data.init_args.source",
            str(small),
            "--writer.output_dir",
            str(out / name),
            "--writer.overwrite",
            "true",
            "--writer.format",
            "jsonl",
            "--trainer.accelerator",
            accelerator,
        ]
        started = time.perf_counter()
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
        (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        result: dict = {"run": name, "rc": proc.returncode, "seconds": round(time.perf_counter() - started, 1)}
        if proc.returncode != 0:
            result["tail"] = (proc.stdout + proc.stderr)[-1500:]
        else:
            rows = [json.loads(line) for line in (out / name / "predictions.jsonl").read_text().splitlines()]
            result["rows"] = {Path(r["path"]).name: max(r["scores"], default=0.0) for r in rows}
            errors = out / name / "errors.jsonl"
            lines = errors.read_text().splitlines() if errors.exists() else []
            result["errors"] = sorted(Path(json.loads(line)["path"]).name for line in lines)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the corpus, the outputs, logs and smoke.json")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--runs", help="comma-separated subset of the runs (the first is the reference); default: all")
    p.add_argument("--no-detector", action="store_true", help="leave out the detector's CPU-against-device runs")
    a = p.parse_args(argv)
    chosen = runs(a.device)
    if a.runs:
        unknown = set(a.runs.split(",")) - set(chosen)
        if unknown:
            p.error(f"unknown runs {sorted(unknown)}; choose from {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in a.runs.split(",")}
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    broken = make_corpus(corpus, a.images)
    # Each row is printed as its run ends (a bounded device command may be cut before the last one).
    print(f"{'run':<18} {'rc':>3} {'s':>6} {'rows':>5} {'errors':>6}  same inputs  top-1 agreement", flush=True)
    results: list[dict] = []
    ok = True
    for name, extra in chosen.items():
        r = run(name, extra, corpus, out)
        results.append(r)
        reference = results[0]
        if r["rc"] != 0:
            ok = False
            print(f"{r['run']:<18} {r['rc']:>3} {r['seconds']:>6}  FAILED:\n{r['tail']}", flush=True)
            continue
        same = reference["rc"] == 0 and set(r["rows"]) == set(reference["rows"]) and r["errors"] == reference["errors"]
        common = [k for k in reference["rows"] if k in r["rows"]]  # where the inputs differ, on those both have
        agree = np.mean([r["rows"][k] == reference["rows"][k] for k in common]) if common else float("nan")
        ok = ok and same and r["errors"] == sorted(broken)
        print(
            f"{r['run']:<18} {r['rc']:>3} {r['seconds']:>6} {len(r['rows']):>5} {len(r['errors']):>6}  {same!s:<11}  {agree:.4f}",
            flush=True,
        )
    detectors = [] if a.no_detector else detector_runs(corpus, out, a.device)
    cpu, dev = (detectors[0], detectors[-1]) if detectors else ({"rc": 1}, {"rc": 1})
    for r in detectors:
        if r["rc"] != 0:
            ok = False
            print(f"{r['run']:<18} {r['rc']:>3} {r['seconds']:>6}  FAILED:\n{r['tail']}")
    if cpu["rc"] == 0 and dev["rc"] == 0:
        same = set(cpu["rows"]) == set(dev["rows"]) and cpu["errors"] == dev["errors"] == sorted(broken)
        gap = max(abs(dev["rows"][k] - v) for k, v in cpu["rows"].items()) if same else float("nan")
        ok = ok and same
        print(f"detector {dev['run']} vs cpu: same inputs and errors {same}, top score max |diff| {gap:.2e}")
        for r in detectors:
            r["rows"] = len(r["rows"])
    summary = [{k: v for k, v in r.items() if k != "rows"} for r in results] + detectors
    (out / "smoke.json").write_text(json.dumps({"ok": ok, "runs": summary}, indent=1))
    print(
        "all runs cover every input once, the broken files as errors" if ok else "FAILED: see the logs in " + str(out)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
