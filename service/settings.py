"""Service settings: environment variables ``SLOTFILL_*`` and an optional settings file.

Precedence, highest first:

1. keyword arguments (``Settings(max_chars=500)``; what ``serve()`` and the CLI pass),
2. environment variables with the ``SLOTFILL_`` prefix (``SLOTFILL_MAX_CHARS=500``),
3. the settings file named by ``SLOTFILL_SETTINGS_FILE``:
   a ``.json`` file holds an object keyed by field name (``{"max_chars": 500}``);
   any other file is read as a dotenv file keyed by variable name (``SLOTFILL_MAX_CHARS=500``),
4. the defaults below.

Unknown keys in a settings file are errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from slotfill.errors import ConfigError
from slotfill.inference.engines import BACKENDS

ENV_PREFIX = "SLOTFILL_"
SETTINGS_FILE_ENV = "SLOTFILL_SETTINGS_FILE"

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Everything the service can be configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True,
                                      case_sensitive=False)

    model_dir: Path | None = Field(None, description="Artifact directory to serve (required to start).")
    max_chars: int = Field(1000, ge=1, description="Longest text, in Unicode code points.")
    max_tokens: int = Field(128, ge=1, description="Most tokens per utterance (after tokenisation).")
    max_batch_items: int = Field(64, ge=1, description="Most items in one /v1/tag/batch request.")
    min_confidence: float | None = Field(None, ge=0, le=1, description="Default confidence floor (0 to 1) for a "
                                         "/v1/tag or /v1/tag/batch item that gives no min_confidence, and for /v2 "
                                         "inference: slots below it are dropped. Unset: none; a request's own "
                                         "value wins, and 0 turns the floor off for that request.")
    max_body_bytes: int = Field(1024 * 1024, ge=1, description="Largest request body, checked before parsing.")
    workers: int = Field(1, ge=1, description="Uvicorn worker processes.")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads per worker process (0: torch's default). "
                                                    "Requests run in parallel in a threadpool instead.")
    backend: Literal[BACKENDS] = Field(  # type: ignore[valid-type]
        "auto", description="Inference backend: onnx (onnxruntime, no torch in the process), onnx-int8 (the same "
                            "with the artifact's int8 graph) or torch; auto takes onnx when the artifact has a "
                            "model.onnx and onnxruntime is installed.")
    onnx_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads per worker process (0: its default).")
    model_thread: bool = Field(True, description="Run the model in a worker thread, so that the event loop goes on "
                               "reading and answering requests while onnxruntime or torch compute outside the "
                               "interpreter lock; false: on the event loop itself, which saves the hand-off "
                               "(measured in bench/suite.py: better p99 with the int8 graph, lower throughput "
                               "with the float graph).")
    batching: bool = Field(True, description="Group concurrent /v1/tag requests (and /v1/tag/batch items) into "
                                             "one padded forward pass; false: each request runs on its own.")
    batch_max_size: int = Field(32, ge=1, description="Most items in one micro-batch.")
    batch_max_wait_ms: float = Field(2.0, ge=0, le=10_000, description="Longest an item waits for its micro-batch "
                                                                       "to start (the first item starts the clock).")
    batch_idle_start: bool = Field(True, description="A request that finds the model idle starts its batch at once "
                                   "(with what arrived in the same event-loop step) instead of waiting max_wait.")
    batch_max_concurrency: int = Field(0, ge=0, description="Most micro-batches running at once (0: no limit, so no "
                                       "batch waits past max_wait). At the limit, the next batch keeps collecting "
                                       "(up to batch_max_size) and starts when a running one ends.")
    max_pending: int = Field(256, ge=0, description="Most /v1/tag and /v1/tag/batch requests admitted and not yet "
                             "answered, per worker process; past it a request gets 503 overloaded with Retry-After "
                             "at once instead of queueing (0: no limit). One connection has one request in flight, "
                             "so this is never reached by a few dozen clients.")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After (seconds) sent with 503 overloaded.")
    # Connections (service/protocol.py). The defaults admit any real client and bound what a hostile one costs.
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024, description="Largest request line and "
                                  "headers together, counted as they arrive; past it 431 headers_too_large. 16 KiB "
                                  "as h11 and Node.js allow: a browser sends under 2 KiB, and a bearer token or a "
                                  "few cookies fit several times over.")
    max_headers: int = Field(100, ge=8, le=10_000, description="Most header lines in one request; past it 431 "
                             "headers_too_large (100, as Apache's LimitRequestFields; clients send about ten).")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="Longest time from a connection's start, or "
                                    "a request's first byte, to the end of its headers; past it 408 request_timeout "
                                    "and the connection is closed. A client on the other side of the world sends "
                                    "its headers in one round trip (under a second); 10 s leaves room for a lossy "
                                    "mobile link.")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="Longest time from the end of a request's "
                                  "headers to the end of its body, in total (a client trickling a byte a second is "
                                  "dropped too); past it 408 request_timeout, or the connection is closed when an "
                                  "answer has started. 30 s moves max_body_bytes (1 MiB) at 35 KB/s, a slow 3G "
                                  "link.")
    keep_alive_s: float = Field(5.0, gt=0, le=3600, description="Longest an idle connection is kept open between "
                                "requests (uvicorn's timeout_keep_alive, 5 s as uvicorn's default). Behind a load "
                                "balancer that reuses connections, set it above the balancer's idle timeout (60 s "
                                "on AWS ALB), so that the balancer closes idle connections first.")
    max_connections: int = Field(0, ge=0, le=1_000_000, description="Most open connections per worker process (0: "
                                 "the process's open-file limit minus 64 for the model, logs and sockets, at most "
                                 "4096). Past it a new connection closes the connection that has waited longest "
                                 "without a request in progress (idle between requests, or still sending its "
                                 "headers); when every connection has a request in progress, the new one's request "
                                 "is answered 503 overloaded and the connection closed (liveness probes, /health "
                                 "and /v2/health/live, are answered still).")
    health_failures: int = Field(5, ge=1, description="GET /health answers 503 model_failing once this many model "
                                 "calls in a row have failed (client input never reaches the model: failing calls "
                                 "mean a broken model, which a restart loads again); one success resets the count.")
    health_stall_s: float = Field(60.0, gt=0, description="GET /health answers 503 model_stalled when a model call "
                                  "has been running, or a request waiting for one, for longer than this (a stuck "
                                  "backend). A full micro-batch takes tens of milliseconds.")
    log_format: Literal["json", "text"] = "json"
    log_level: LogLevel = "INFO"
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed CORS origins; empty disables CORS. Comma-separated or a JSON list.")
    admin_token: SecretStr | None = Field(None, description="Bearer token for /v1/admin/*; unset disables them.")
    demo: bool = Field(True, description="Serve GET /demo, a page that tags what you type through /v1/tag; "
                                         "false: /demo is 404.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("backend", mode="before")
    @classmethod
    def _lower_backend(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("admin_token", mode="after")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # SLOTFILL_ADMIN_TOKEN="" must not enable the admin API with an empty password.
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get(SETTINGS_FILE_ENV, "").strip()
        if settings_file:
            path = Path(settings_file)
            if not path.is_file():
                raise ConfigError(f"{SETTINGS_FILE_ENV}: no such file: {path}")
            if path.suffix.lower() == ".json":
                sources.append(JsonConfigSettingsSource(settings_cls, json_file=path))
            else:
                sources.append(DotEnvSettingsSource(settings_cls, env_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning validation problems into one clear :class:`ConfigError`."""
    from pydantic import ValidationError

    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}" for error in exc.errors())
        raise ConfigError(f"invalid service settings: {problems}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid settings file {os.environ.get(SETTINGS_FILE_ENV)}: {exc}") from None
