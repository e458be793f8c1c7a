"""Settings sources and precedence, CORS, logging format, request ids, and the command line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testlib import REPO, clean_env

from service.app import create_app
from service.logs import JsonFormatter, TextFormatter
from service.middleware import request_id_from
from service.settings import Settings, load_settings
from slotfill.errors import ConfigError


@pytest.fixture(autouse=True)
def no_slotfill_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SLOTFILL_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    settings = Settings()
    assert (settings.max_chars, settings.max_tokens, settings.max_batch_items) == (1000, 128, 64)
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.cors_origins == [] and settings.admin_token is None
    assert (settings.host, settings.port, settings.workers, settings.torch_threads) == ("127.0.0.1", 8000, 1, 1)
    assert (settings.log_format, settings.log_level) == ("json", "INFO")


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTFILL_MAX_CHARS", "50")
    monkeypatch.setenv("SLOTFILL_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SLOTFILL_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("SLOTFILL_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.max_chars == 50
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.log_level == "DEBUG"
    monkeypatch.setenv("SLOTFILL_CORS_ORIGINS", '["https://c.example"]')
    assert Settings().cors_origins == ["https://c.example"]


def test_empty_admin_token_means_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTFILL_ADMIN_TOKEN", "")
    assert Settings().admin_token is None
    assert Settings(admin_token="   ").admin_token is None


def test_json_settings_file_and_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"max_chars": 10, "max_tokens": 5, "cors_origins": ["https://x.example"]}))
    monkeypatch.setenv("SLOTFILL_SETTINGS_FILE", str(path))
    monkeypatch.setenv("SLOTFILL_MAX_TOKENS", "7")
    settings = Settings(max_batch_items=3)
    assert settings.max_chars == 10  # file
    assert settings.max_tokens == 7  # environment beats file
    assert settings.max_batch_items == 3  # arguments beat everything
    assert settings.cors_origins == ["https://x.example"]
    assert Settings(max_tokens=9).max_tokens == 9


def test_dotenv_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "service.env"
    path.write_text("SLOTFILL_MAX_CHARS=20\nSLOTFILL_LOG_FORMAT=text\n")
    monkeypatch.setenv("SLOTFILL_SETTINGS_FILE", str(path))
    settings = Settings()
    assert (settings.max_chars, settings.log_format) == (20, "text")


@pytest.mark.parametrize(("content", "suffix", "message"), [
    ('{"max_chars": 0}', ".json", "max_chars"),
    ('{"max_chrs": 10}', ".json", "max_chrs"),
    ('{"log_format": "xml"}', ".json", "log_format"),
    ("{not json", ".json", "invalid settings file"),
])
def test_bad_settings_are_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str,
                                          suffix: str, message: str) -> None:
    path = tmp_path / f"settings{suffix}"
    path.write_text(content)
    monkeypatch.setenv("SLOTFILL_SETTINGS_FILE", str(path))
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_missing_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLOTFILL_SETTINGS_FILE", str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


def test_cors_off_by_default_and_on_when_configured(predictor) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(Settings(), predictor=predictor)) as client:
        assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "https://app.example"}).headers
    app = create_app(Settings(cors_origins=["https://app.example"]), predictor=predictor)
    with TestClient(app) as client:
        response = client.post("/v1/tag", json={"text": "hi"}, headers={"Origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        assert client.options("/v1/tag", headers=preflight).status_code == 200
        other = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_not_ready_without_a_lifespan(predictor) -> None:
    client = TestClient(create_app(Settings(), predictor=predictor))  # lifespan not run: nothing loaded
    response = client.get("/ready")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert client.post("/v1/tag", json={"text": "hi"}).json()["error"]["code"] == "not_ready"
    assert client.get("/health").status_code == 200


def test_unexpected_errors_are_json_500s(predictor) -> None:
    class Broken:
        def __getattr__(self, name):
            return getattr(predictor, name)

        def predict_texts(self, texts):
            raise RuntimeError("boom")

    with TestClient(create_app(Settings(), predictor=Broken())) as client:
        response = client.post("/v1/tag", json={"text": "hi"}, headers={"X-Request-ID": "trace-me"})
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal_error", "message": "internal server error",
                                             "field": None}}
        assert response.headers["x-request-id"] == "trace-me"
        assert "boom" not in response.text
        assert client.get("/ready").status_code == 200


def test_request_id_validation() -> None:
    def scope(value: bytes) -> dict:
        return {"headers": [(b"x-request-id", value)]}

    assert request_id_from(scope(b"abc-123_x.y:z")) == "abc-123_x.y:z"
    for bad in (b"", b"a b", b"x" * 129, b"\xff", b"-leading", b"a\nb"):
        generated = request_id_from(scope(bad))
        assert len(generated) == 32 and generated != bad.decode("latin-1")
    assert len(request_id_from({"headers": []})) == 32


def test_log_formatters() -> None:
    record = logging.LogRecord("slotfill.service.access", logging.INFO, __file__, 1, "request", (), None)
    record.request_id, record.status, record.path = "r1", 200, "/v1/tag\nINJECTED"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "r1" and parsed["status"] == 200 and parsed["message"] == "request"
    assert parsed["level"] == "INFO" and parsed["logger"] == "slotfill.service.access"
    assert "request_id=r1" in TextFormatter().format(record)


def test_python_m_service_with_a_bad_model_exits_cleanly(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    result = subprocess.run([sys.executable, "-m", "service", "--model", str(tmp_path / "model")], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "manifest" in result.stderr and "Traceback" not in result.stderr


def test_python_m_service_with_a_bad_decoder_setting_exits_cleanly(model_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--model", str(model_dir)], cwd=REPO,
                            env=clean_env(SLOTFILL_DECODER="fortran"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "SLOTFILL_DECODER must be one of auto, c, numpy, not 'fortran'" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_m_service_without_a_model() -> None:
    result = subprocess.run([sys.executable, "-m", "service"], cwd=REPO, env=clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "no model to serve" in result.stderr, result.stderr


def test_python_m_service_help() -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=REPO, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--model" in result.stdout and "--workers" in result.stdout


@pytest.mark.slow
def test_two_workers(model_dir: Path, tmp_path: Path) -> None:
    from service_testlib import SERVER_ENV, start_server, stop_server

    server = start_server(model_dir, tmp_path / "server.log", SERVER_ENV, args=["--workers", "2"], timeout=180)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for _ in range(10):
                assert client.post("/v1/tag", json={"text": "book a table"}).status_code == 200
            response = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {server.admin_token}"})
            assert response.status_code == 409 and response.json()["error"]["code"] == "reload_unsupported"
    finally:
        assert stop_server(server) == 0


SERVE_COMMANDS = {"python -m service": ["-m", "service"], "slotfill serve": ["-m", "training.cli", "serve"]}


@pytest.mark.parametrize("command", SERVE_COMMANDS.values(), ids=SERVE_COMMANDS.keys())
@pytest.mark.parametrize(("contents", "complaint"), [
    (None, "SLOTFILL_SETTINGS_FILE: no such file: {path}"),
    ({"max_chars": 0}, "invalid service settings: max_chars: Input should be greater than or equal to 1"),
    ({"model_dir": "{tmp}/model-from-the-file"}, "{tmp}/model-from-the-file"),  # read: it is the model served
], ids=["missing", "bad value", "model_dir"])
def test_serve_commands_read_the_settings_file(tmp_path: Path, command: list[str], contents: dict | None,
                                               complaint: str) -> None:
    path = tmp_path / "settings.json"
    if contents is not None:
        path.write_text(json.dumps(contents).replace("{tmp}", str(tmp_path)))
    result = subprocess.run([sys.executable, *command, "--settings-file", str(path)], cwd=REPO, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert complaint.format(path=path, tmp=tmp_path) in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_serve_commands_share_their_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``slotfill serve`` and ``python -m service`` take the same options and start the service the same way."""
    import service.main
    from training.cli import main as slotfill_main

    calls = []

    def fake_serve(*args, **kwargs) -> None:
        calls.append((args, kwargs, __import__("os").environ.get("SLOTFILL_SETTINGS_FILE")))

    monkeypatch.setattr(service.main, "serve", fake_serve)
    monkeypatch.setenv("SLOTFILL_SETTINGS_FILE", "")  # restored when the test ends
    options = ["--model", "m", "--host", "0.0.0.0", "--port", "8123", "--workers", "2", "--backend", "onnx",
               "--log-format", "text", "--log-level", "debug", "--settings-file", "s.env"]
    monkeypatch.chdir(tmp_path)
    assert service.main.main(options) == 0
    assert slotfill_main(["serve", *options]) == 0
    expected = ((Path("m"), "0.0.0.0", 8123, 2), {"backend": "onnx", "log_format": "text", "log_level": "debug"},
                str(tmp_path / "s.env"))
    assert calls == [expected, expected]
