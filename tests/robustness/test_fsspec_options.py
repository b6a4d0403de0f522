"""fsspec from a config file: allowed protocols and options only, no endpoint named by the config alone, no ``$VARS``
in URLs. A local HTTP server on 127.0.0.1 records every request (path and headers): the secret never reaches it."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lit_infer.data.access import check_endpoints
from lit_infer.data.storage import filesystem
from lit_infer.errors import ConfigError
from robustness.robust_helpers import REPO, cli_env, refused_in_one_line

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def _any(self) -> None:
        self.seen.append(self.requestline + "\n" + str(self.headers))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.seen
    httpd.shutdown()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, **data: object) -> Path:
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}}},
        },
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"num_workers": 0, **data}},
        "writer": {"output_dir": str(tmp_path / "out")},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_a_zip_with_a_local_file_opened_for_writing_is_refused_before_anything_opens(tmp_path: Path) -> None:
    victim = tmp_path / "zipme.txt"
    victim.write_text("keep me")
    hostile = ["--data.source", "zip://a.png", "--data.reading.storage_options", f"{{fo: {victim}, mode: w}}"]
    done = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", str(REPO / "configs" / "quickstart.yaml"), *hostile],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "data.source='zip://a.png'" in done.stderr
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("source", "options", "key"),
    [
        ("zip://a.png", {"fo": "VICTIM", "mode": "w"}, "data.source='zip://a.png'"),
        ("simplecache::s3://b/x.txt", {}, "data.source='simplecache::s3://b/x.txt'"),
        ("memory://x/list.txt", {}, "data.source='memory://x/list.txt'"),
        ("s3://b/list.txt", {"fo": "VICTIM", "mode": "w"}, "data.reading.storage_options.fo="),
        ("s3://b/list.txt", {"use_ssl": False}, "data.reading.storage_options.use_ssl=False"),
        ("s3://b/list.txt", {"session": {"class_path": "x"}}, "data.reading.storage_options.session="),
        ("s3://b/list.txt", {"client_kwargs": {"verify": False}}, "data.reading.storage_options.client_kwargs.verify="),
        ("https://h/list.txt", {"client_kwargs": {"trust_env": True}}, "data.reading.storage_options.client_kwargs="),
        ("gs://b/list.txt", {"token": "VICTIM"}, "data.reading.storage_options.token="),
        ("file:///tmp/list.txt", {"auto_mkdir": True}, "data.reading.storage_options.auto_mkdir=True"),
    ],
)
def test_protocols_and_options_outside_the_allow_list_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, options: dict, key: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    options = json.loads(json.dumps(options).replace("VICTIM", str(victim)))
    err = refused_in_one_line(
        ["--config", str(_config(tmp_path, source=source, reading={"storage_options": options}))], capsys
    )
    assert key in err, err
    assert victim.read_text() == "keep me"
    with pytest.raises(ConfigError):  # whoever calls: the Python API, the merge command
        filesystem(source, options)


def test_an_endpoint_named_only_by_a_config_file_gets_no_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: tuple[str, list[str]], creds: None
) -> None:
    endpoint, seen = server
    config = _config(
        tmp_path,
        source="s3://bucket/list.txt",
        reading={"storage_options": {"client_kwargs": {"endpoint_url": endpoint}}},
    )
    err = refused_in_one_line(["--config", str(config)], capsys)
    assert f"data.reading.storage_options.client_kwargs.endpoint_url={endpoint!r}" in err and "AWS_ENDPOINT_URL" in err
    config = _config(tmp_path, source="s3://bucket/list.txt", reading={"storage_options": {"endpoint_url": endpoint}})
    assert "data.reading.storage_options.endpoint_url=" in refused_in_one_line(["--config", str(config)], capsys)
    assert seen == []


def test_a_secret_in_a_url_of_a_config_file_never_expands(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    server: tuple[str, list[str]],
    creds: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, seen = server
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the user's own endpoint: requests may go there
    for source in ("s3://bucket/${AWS_SECRET_ACCESS_KEY}/list.txt", "s3://bucket/$AWS_SECRET_ACCESS_KEY.txt"):
        err = refused_in_one_line(["--config", str(_config(tmp_path, source=source))], capsys)
        assert "data.source=" in err and "do not expand in a URL" in err and SECRET not in err
    assert seen == []


def test_a_secret_in_a_local_path_of_a_config_file_never_expands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], creds: None
) -> None:
    config = _config(tmp_path, source=str(tmp_path / "${AWS_SECRET_ACCESS_KEY}"))
    err = refused_in_one_line(["--config", str(config)], capsys)
    assert "data.source=" in err and "$AWS_SECRET_ACCESS_KEY does not expand in a config file" in err
    assert SECRET not in err and not list(tmp_path.rglob(f"*{SECRET}*"))


@pytest.mark.slow
def test_an_endpoint_from_the_environment_or_the_command_line_gets_signed_requests_without_the_secret(
    tmp_path: Path, server: tuple[str, list[str]]
) -> None:
    """The allowed ways, through the real CLI: requests arrive, signed with the key id; the secret is never sent."""
    endpoint, seen = server
    env = {**cli_env(), "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_ENDPOINT_URL", None)
    config = _config(tmp_path, source="s3://bucket/list.txt")
    option = json.dumps({"client_kwargs": {"endpoint_url": endpoint}})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_infer",
            "predict",
            "--config",
            str(config),
            "--data.reading.storage_options",
            option,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0  # the server has no such object
    assert seen and any(request.split()[1].startswith("/bucket") for request in seen), done.stderr[-2000:]
    assert any(KEY_ID in request for request in seen)
    assert not any(SECRET in request for request in seen) and SECRET not in done.stderr


def test_which_endpoints_a_config_may_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9000/")
    options = {"client_kwargs": {"endpoint_url": "http://minio.local:9000"}}
    check_endpoints("s3://b/x", options, "data.reading.storage_options", set())  # the environment names it
    check_endpoints(
        "s3://b/x", {"endpoint_url": "http://h:1"}, "data.reading.storage_options", {"http://h:1"}
    )  # the CLI
    check_endpoints("s3://b/x", {"anon": True, "endpoint_url": "http://other:1"}, "data.reading.storage_options", set())
    with pytest.raises(ConfigError, match=r"^data.reading.storage_options.endpoint_url='http://other:1': an endpoint"):
        check_endpoints("s3://b/x", {"endpoint_url": "http://other:1"}, "data.reading.storage_options", {"http://h:1"})


def test_an_object_store_refusal_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: tuple[str, list[str]], creds: None
) -> None:
    endpoint, seen = server
    option = json.dumps({"client_kwargs": {"endpoint_url": endpoint}})
    config = _config(tmp_path, source="s3://bucket/list.txt")
    err = refused_in_one_line(["--config", str(config), "--data.reading.storage_options", option], capsys)
    assert err.startswith("lit-infer: error: data.source='s3://bucket/list.txt': no such file"), err
    assert seen and not any(SECRET in request for request in seen)
