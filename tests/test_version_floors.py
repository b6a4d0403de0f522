"""The declared version floors are true: lightning excludes the compromised releases and starts at the fix for code
execution through ``load_from_checkpoint``; jsonargparse starts at the first release with the settings security.py
sets. ``LIT_INFER_TEST_FLOORS=1`` also installs the floors in a throwaway venv and runs a smoke subset there."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import jsonargparse
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["tests/test_cli.py", "tests/robustness/test_import_policy.py", "tests/lifecycle", "tests/callbacks"]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def _floor(req: Requirement) -> str:
    return next(s.version for s in req.specifier if s.operator == ">=")


def test_lightning_excludes_the_compromised_releases_and_starts_at_the_fix() -> None:
    spec = _requirements()["lightning"].specifier
    # GHSA-w37p-236h-pfx3: 2.6.2 and 2.6.3 on the registry were malware; 2.6.6 fixed load_from_checkpoint.
    assert not spec.contains("2.6.2") and not spec.contains("2.6.3")
    assert Version(_floor(_requirements()["lightning"])) >= Version("2.6.6")
    assert spec.contains(version("lightning"))


def test_jsonargparse_floor_has_the_settings_security_uses() -> None:
    req = _requirements()["jsonargparse"]
    # import_path_allowlist / import_path_denylist came with 4.52.0 (4.51.0's set_parsing_settings has neither).
    assert Version(_floor(req)) >= Version("4.52.0")
    assert req.specifier.contains(version("jsonargparse"))
    settings = inspect.signature(jsonargparse.set_parsing_settings).parameters
    assert {"import_path_allowlist", "import_path_denylist"} <= set(settings)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LIT_INFER_TEST_FLOORS"), reason="set LIT_INFER_TEST_FLOORS=1 (needs PyPI)")
def test_smoke_subset_passes_on_the_floors(tmp_path: Path) -> None:
    # A venv layered over this one (its packages via a .pth file) with only the floors installed on top.
    venv = tmp_path / "floors"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "outer.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    reqs = _requirements()
    pins = [f"lightning=={_floor(reqs['lightning'])}", f"jsonargparse=={_floor(reqs['jsonargparse'])}"]
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *pins], check=True)
    got = subprocess.run(
        [python, "-c", "import lightning, jsonargparse; print(lightning.__version__, jsonargparse.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert [Version(v) for v in got] == [Version(_floor(reqs["lightning"])), Version(_floor(reqs["jsonargparse"]))]
    result = subprocess.run(
        [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SMOKE], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
