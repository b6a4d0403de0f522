"""The common mistakes through the CLI: at most three lines on stderr, exit 2, the key as typed, no traceback.

Each mistake runs through ``main()`` in this process (torch is imported once), and one of each family also as a
real ``python -m lit_infer`` subprocess, side by side, for the process boundary: the exit status and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_images

from lit_infer.cli import main

CONFIG = """
model:
  class_path: lit_infer.ImageClassifier
  init_args:
    net:
      class_path: lit_infer.nets.TinyCNN
      init_args: {num_classes: 3, width: 4, depth: 1}
    preprocessing: {crop_size: 16, resize_size: 16}
data:
  class_path: lit_infer.ImageDataModule
  init_args:
    source: imgs
    batch_size: 4
trainer:
  accelerator: cpu
  devices: 1
"""

BAD_YAML = "model:\n  class_path: lit_infer.ImageClassifier\n   init_args:\n  x: 1\n"

# (name, extra arguments, what stderr must contain)
MISTAKES = [
    ("unknown key, did-you-mean", ["--model.init_args.topk", "3"], ["model.topk", "'top_k'"]),
    ("unknown nested key", ["--model.net.init_args.widht", "3"], ["model.net.widht", "'width'"]),
    ("unknown top-level key", ["--writer.formt", "csv"], ["--writer.formt", "--writer.format"]),
    ("wrong type", ["--data.init_args.batch_size", "sixteen"], ["data.batch_size", "'sixteen'", "int"]),
    ("wrong choice", ["--writer.format", "xlsx"], ["writer.format", "'xlsx'", "'csv'"]),
    ("unknown strategy", ["--trainer.strategy", "ddpp"], ["trainer.strategy", "'ddpp'", "'ddp'", "cpu_multiprocess"]),
    ("unknown accelerator", ["--trainer.accelerator", "gpux"], ["trainer.accelerator", "'gpux'", "'gpu'"]),
    ("Lightning's --ckpt_path", ["--ckpt_path", "mynet.ckpt"], ["--ckpt_path", "model.weights"]),
    ("YAML syntax", ["--config", "bad.yaml"], ["bad.yaml", "line 3"]),
    ("class path not importable", ["--model.net.class_path", "lit_infer.nets.NoNet"], ["model.net.class_path"]),
    ("import refused", ["--model.net.class_path", "os.system"], ["model.net", "'os.system'", "is denied"]),
    ("own code not found", ["--model.net.class_path", "nosuchpkg.Net"], ["model.net", "nosuchpkg.py", "folder"]),
    ("source not found", ["--data.source", "nosuch"], ["data.source", "'nosuch'", "working directory"]),
    ("a key now in a group", ["--data.exact", "false"], ["data.exact", "data.decoding.exact"]),
    ("unknown key in a group", ["--data.decoding.exat", "false"], ["data.decoding.exat", "'exact'"]),
    ("bad value in a group", ["--data.reading.io_retries", "-1"], ["data.reading.io_retries=-1", "at least 0"]),
    ("a group set to null", ["--data.decoding", "null"], ["data.decoding", "group of options"]),
    ("a config with a flat data key", ["--config", "flat.yaml"], ["data.cache_dir", "data.decoding.cache_dir"]),
    ("relative to the config", ["--data.source", "beside"], ["data.source", "exists next to"]),
    ("config file not found", ["--config", "nosuch.yaml"], ["config", "nosuch.yaml"]),
    ("weights not found", ["--model.weights", "~/nosuch.pt"], ["model.weights", "nosuch.pt"]),
]
if not torch.cuda.is_available():
    MISTAKES.append(("accelerator missing", ["--trainer.accelerator", "gpu"], ["trainer.accelerator", "not available"]))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LIT_INFER_DEBUG", "PYTHONPATH")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mistakes")
    make_images(root / "imgs", 4, size=(20, 20))
    (root / "conf").mkdir()
    (root / "conf" / "run.yaml").write_text(CONFIG, encoding="utf-8")
    (root / "conf" / "beside").mkdir()  # data.source 'beside' exists relative to the config's folder only
    make_images(root / "conf" / "beside", 2, size=(20, 20))
    (root / "bad.yaml").write_text(BAD_YAML, encoding="utf-8")
    (root / "flat.yaml").write_text("data:\n  init_args:\n    cache_dir: cache\n", encoding="utf-8")
    return root


SUBPROCESS = (
    "unknown key, did-you-mean",
    "YAML syntax",
    "unknown strategy",
    "Lightning's --ckpt_path",
    "source not found",
)


def _check(err: str, code: object, wanted: list[str]) -> bool:
    lines = err.strip().splitlines()
    ok = code == 2 and 1 <= len(lines) <= 3 and "Traceback" not in err
    return ok and lines[0].startswith("lit-infer: error: ") and all(w in err for w in wanted)


@pytest.mark.parametrize(("name", "args", "wanted"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_at_most_three_lines_exit_2_and_names_the_key(
    workdir: Path, name: str, args: list[str], wanted: list[str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("LIT_INFER_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", "conf/run.yaml", *args])
    err = capsys.readouterr().err
    assert _check(err, exc.value.code, wanted), f"exit {exc.value.code}:\n{err}"


@pytest.mark.slow
def test_mistakes_as_real_processes(workdir: Path) -> None:
    base = [sys.executable, "-m", "lit_infer", "predict", "--config", "conf/run.yaml"]
    chosen = [m for m in MISTAKES if m[0] in SUBPROCESS]
    runs = {
        name: subprocess.Popen(
            [*base, *args], cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, args, _ in chosen
    }
    failures = []
    for name, _, wanted in chosen:
        _, err = runs[name].communicate(timeout=240)
        if not _check(err, runs[name].returncode, wanted):
            failures.append(f"{name}: exit {runs[name].returncode}:\n{err[-2000:]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_debug_shows_the_traceback(workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", "conf/run.yaml", "--trainer.strategy", "ddpp"],
        cwd=workdir,
        env=_env(LIT_INFER_DEBUG="1"),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "trainer.strategy" in result.stderr


@pytest.mark.slow
def test_a_wrong_command_is_one_line_without_importing_anything_heavy(workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predictt", "--config", "conf/run.yaml"],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lit-infer: error: 'predictt' is not a command. Did you mean 'predict'? Usage: lit-infer predict --config my.yaml"
    ]


@pytest.mark.parametrize("error", ["EOFError()", "ConnectionRefusedError(111, 'Connection refused')"])
def test_a_worker_killed_while_handing_over_a_batch_is_the_worker_died_line(error: str) -> None:
    # The hand-over's own error, raised in torch's reductions.py before torch notices the death (seen in CI: EOFError
    # from rebuild_storage_fd), is the same event as "DataLoader worker (pid N) is killed by signal".
    from lit_infer.cli.errors import explain

    code = compile(f"raise {error}", "/site-packages/torch/multiprocessing/reductions.py", "exec")
    with pytest.raises((EOFError, OSError)) as info:
        exec(code)
    outcome = explain(info.value, [])
    assert outcome is not None and outcome[1] == 2, outcome
    assert "a data loading worker died" in outcome[0][0]
    with pytest.raises(EOFError) as elsewhere:  # the same type raised anywhere else is not taken for it
        exec(compile("raise EOFError()", "/somewhere/else.py", "exec"))
    assert explain(elsewhere.value, []) is None or "worker died" not in explain(elsewhere.value, [])[0][0]
