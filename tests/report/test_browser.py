"""The quickstart's report.html opened from disk in headless Chromium: it renders its sections, its thumbnails and
plots are visible, it logs no console message and requests nothing from any network. A screenshot is kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
    ),
]
SECTIONS = ["run", "speed", "failures", "metrics", "confusion", "per-class", "mistakes", "scores", "calibration"]
# The browser's own background traffic (its clock, updates, accounts), which no page causes.
BROWSER_HOSTS = re.compile(r"^[a-z]+://([^/]*\.)?(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)(:\d+)?/")
# Test-only: measures what is visible and writes it into the page, read back through --dump-dom. The report itself
# runs no script (its Content-Security-Policy forbids them), so a copy with this probe and a policy that lets it run.
PROBE = """<script>
addEventListener("load", () => {
  const out = [];
  for (const el of document.querySelectorAll("section[id], div[id], section img, section svg")) {
    const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    const shown = r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none";
    const loaded = el.tagName !== "IMG" || (el.complete && el.naturalWidth > 0);
    out.push((el.id || el.tagName.toLowerCase()) + "=" + (shown && loaded ? "visible" : "HIDDEN"));
  }
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = out.join(";");
  document.body.appendChild(pre);
});
</script>"""


def chromium(page: Path, workdir: Path, *args: str) -> tuple[str, list[str], set[str]]:
    """Open ``page`` from disk: the DOM (or nothing, with --screenshot), console lines, and the URLs it requested."""
    netlog = workdir / "net.json"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={workdir / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--log-net-log={netlog}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing resolves: a request could not succeed anyway
            "--virtual-time-budget=5000",  # let the page load and render before the dump
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    urls = set(re.findall(r'"url":"([a-z]+://[^"]*)"', netlog.read_text(encoding="utf-8", errors="replace")))
    requests = {u for u in urls if not u.startswith(("file:", "data:", "chrome")) and not BROWSER_HOSTS.match(u)}
    return done.stdout, console, requests


def with_probe(report: Path, tmp_path: Path) -> Path:
    html = report.read_text(encoding="utf-8")
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html)
    assert policy and "default-src 'none'" in policy.group(1)
    html = html.replace(policy.group(1), policy.group(1) + "; script-src 'unsafe-inline'").replace("</body>", PROBE)
    probed = tmp_path / "probed.html"
    probed.write_text(html, encoding="utf-8")
    return probed


def test_the_quickstart_report_renders_offline_in_chromium(quickstart_run: Path, tmp_path: Path) -> None:
    report = quickstart_run / "report.html"
    dom, console, requests = chromium(report, tmp_path / "plain", "--dump-dom")
    assert console == [] and requests == set()
    for section in SECTIONS:
        assert f'id="{section}"' in dom, section
    for name in ("circle", "cross", "square", "triangle", "top-1 accuracy", "expected calibration error"):
        assert name in dom
    dom, console, requests = chromium(with_probe(report, tmp_path), tmp_path / "probe", "--dump-dom")
    assert console == [] and requests == set()
    probe = re.search(r'<pre id="probe">([^<]*)</pre>', dom).group(1)
    seen = [tuple(item.split("=")) for item in probe.split(";")]
    assert all((s, "visible") in seen for s in SECTIONS), seen
    assert "HIDDEN" not in probe, seen  # every thumbnail loaded, every plot has a size
    assert [k for k, _ in seen].count("img") >= 1 and [k for k, _ in seen].count("svg") >= 4
    artifacts = Path(os.environ.get("LIT_INFER_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report_quickstart.png"
    chromium(report, tmp_path / "shot", f"--screenshot={shot}", "--window-size=1100,2400", "--hide-scrollbars")
    with Image.open(shot) as image:
        assert image.size == (1100, 2400) and len(image.convert("L").getcolors(1 << 16) or []) > 50


def test_the_check_sees_a_request_and_a_console_message(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<img src="http://example.com/a.png"><script>console.error("boom")</script>', encoding="utf-8")
    _, console, requests = chromium(page, tmp_path / "bad")
    assert any("boom" in line for line in console) and "http://example.com/a.png" in requests
