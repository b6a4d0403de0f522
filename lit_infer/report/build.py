"""Build ``report.html`` for a finished run: read it, compute its figures, draw them, render one self-contained file.

The file is bounded whatever the run's size: galleries of at most 24 thumbnails of at most 128 px, a confusion
grid only up to 30 classes (the 20 most confused pairs beyond), at most 100 rows of per-class scores, 30 bars of
predicted classes, 120 points per rank for at most 10 ranks on the speed plot, the projection of at most 2,000
embeddings, :data:`MAX_FAILURE_TYPES` error types with 5 paths each, and the config cut at :data:`CONFIG_CHARS`
characters: about 1 MB at most (the limits are the constants of ``sections.py``, ``speed.py`` and this file).
"""

from __future__ import annotations

import os
import shlex
import stat
from datetime import datetime, timezone
from typing import Any

from lit_infer.atomic import atomic_open
from lit_infer.errors import RunError
from lit_infer.plan import exact_pixels, fingerprint_digest
from lit_infer.report.files import REPORT_FILE
from lit_infer.report.reading import Run, failures_by_type, read_run
from lit_infer.report.sections import predictions
from lit_infer.report.speed import speed

GENERATOR = '<meta name="generator" content="lit_infer report">'
"""In the head of every report: an existing ``report.html`` without it is someone else's, and stays."""
MAX_FAILURE_TYPES = 30
CONFIG_CHARS = 20_000


def write_report(output_dir: str) -> str:
    """Write ``<output_dir>/report.html`` for the finished run there; returns its path."""
    path = os.path.join(output_dir, REPORT_FILE)
    if os.path.lexists(path) and not _ours(path):
        raise RunError(f"{path!r} is not a report lit_infer wrote: it is left alone (move it to have the report)")
    run = read_run(output_dir)
    html = render(context(run))
    with atomic_open(path, "w", durable=False, encoding="utf-8") as f:
        f.write(html)
    return path


def _ours(path: str) -> bool:
    """Whether ``path`` is a report this code wrote (lit_infer replaces only its own files)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(2048)
    except OSError:
        return False


def render(ctx: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.dirname(__file__)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(**ctx)


def context(run: Run) -> dict[str, Any]:
    summary = run.summary
    ctx: dict[str, Any] = {
        "title": os.path.basename(os.path.abspath(run.output_dir)),
        "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_rows": run_rows(run),
        "config": _config(run),
        "problems": list(run.problems),
        "failures": failures_by_type(run, max_types=MAX_FAILURE_TYPES),
        "num_failed": summary.get("num_failed", 0),
        "speed": speed(run),
    }
    ctx.update(predictions(run, ctx["problems"]))
    return ctx


# ---- the run --------------------------------------------------------------------------------------------------
def run_rows(run: Run) -> list[tuple[str, str]]:
    s, info, fp = run.summary, run.run_info or {}, run.fingerprint
    model, data, trainer = fp.get("model") or {}, fp.get("data") or {}, fp.get("trainer") or {}
    missing = "not recorded"
    started = info.get("process_started_at")
    if started is None and s.get("finished_at") and isinstance(s.get("command_seconds"), (int, float)):
        end = datetime.fromisoformat(s["finished_at"])
        started = datetime.fromtimestamp(end.timestamp() - s["command_seconds"], timezone.utc).isoformat(
            timespec="seconds"
        )
    machine = info.get("machine") or {}
    versions = info.get("versions") or {}
    pixels = s.get("exact_pixels")
    if pixels is None:  # a parts run's summary: from the fingerprint, as finalize decides it
        pixels = exact_pixels(data)
    rows = [
        ("command line", _command(info.get("argv")) or missing),
        ("working folder", info.get("cwd", missing)),
        ("started", started or missing),
        ("finished", s.get("finished_at", missing)),
        ("inputs", s.get("num_items", missing)),
        ("predictions", s.get("num_predicted", missing)),
        ("failures", s.get("num_failed", missing)),
        ("model", model.get("net") or model.get("factory") or model.get("module") or missing),
        ("weights", (model.get("weights") or {}).get("path") if isinstance(model.get("weights"), dict) else missing),
        ("data source", data.get("source", missing)),
        ("layout, format", f"{run.layout}, {(fp.get('output') or {}).get('format', '?')}"),
        ("strategy", f"{s.get('strategy', info.get('strategy', '?'))}, {s.get('world_size', '?')} process(es)"),
        ("precision", trainer.get("precision") or info.get("precision", missing)),
        (
            "accelerator, devices",
            f"{info.get('accelerator', '?')}: {', '.join(info.get('devices') or [])}" if info else missing,
        ),
        (
            "machine",
            f"{machine.get('host', '?')}, {machine.get('platform', '?')}, {machine.get('cores', '?')} cores"
            if machine
            else missing,
        ),
        (
            "versions",
            ", ".join([*(f"{k} {v}" for k, v in versions.items()), f"python {info.get('python', '?')}"])
            if info
            else missing,
        ),
        ("preprocessing", _preprocessing(data.get("preprocessing") or model.get("preprocessing"))),
        (
            "exact pixels",
            {True: "yes (the reference's pixels)", False: "no (data.decoding.exact off or GPU decoding)"}.get(
                pixels, missing
            ),
        ),
        ("fingerprint", _digest(s, fp)),
        ("images/s", _rates(s)),
    ]
    return [(k, str(v)) for k, v in rows]


def _command(argv: Any) -> str | None:
    """The command as typed: ``lit-infer ...`` or ``python -m lit_infer ...`` rather than the script's full path."""
    if not isinstance(argv, list) or not argv:
        return None
    words = [str(a) for a in argv]
    if words[0].endswith(("lit_infer/__main__.py", "lit_infer/cli/__init__.py")):
        words[0:1] = ["python", "-m", "lit_infer"]
    elif os.path.basename(words[0]) == "lit-infer":
        words[0] = "lit-infer"
    return shlex.join(words)


def _preprocessing(p: Any) -> str:
    if not isinstance(p, dict):
        return "not recorded"
    keys = ("resize_size", "crop_size", "crop_mode", "interpolation", "mean", "std")
    return ", ".join(f"{k} {p[k]}" for k in keys if k in p)


def _digest(summary: dict[str, Any], fingerprint: dict[str, Any]) -> str:
    if isinstance(summary.get("run_digest"), str):
        return summary["run_digest"]
    if not fingerprint:
        return "not recorded"
    return fingerprint_digest(fingerprint)


def _rates(s: dict[str, Any]) -> str:
    parts = []
    if s.get("images_per_second") is not None and s.get("command_seconds") is not None:
        parts.append(f"{s['images_per_second']} over the whole command ({s['command_seconds']} s)")
    elif s.get("images_per_second") is not None:  # a parts run's summary counts the predict loop only
        parts.append(f"{s['images_per_second']} over the predict loop ({s.get('wall_seconds', '?')} s)")
    if isinstance(s.get("steady_images_per_second"), (int, float)):
        parts.append(f"{s['steady_images_per_second']:.2f} steady, after the first batch")
    return "; ".join(parts) or "not recorded"


def _config(run: Run) -> str | None:
    text = (run.run_info or {}).get("config")
    if not isinstance(text, str):
        return None
    return text if len(text) <= CONFIG_CHARS else text[:CONFIG_CHARS] + "\n... (cut)"
