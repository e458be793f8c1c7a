"""The service serves a model with a transformer front-end (torch backend) over a real socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_testlib import SERVER_ENV, start_server, stop_server


def test_contextual_model_is_served_with_offsets_and_confidences(contextual_model_dir: Path, tmp_path: Path):
    server = start_server(contextual_model_dir, tmp_path / "server.log", SERVER_ENV)
    try:
        with server.client() as http:
            info = http.get("/v1/model").json()
            assert info["backend"] == "torch"
            assert info["config"]["contextual_name"] == "all-MiniLM-L6-v2"
            text = "Book a table for four at an Italian place tomorrow at 7pm, café Zoë 東京 🙂"
            body = http.post("/v1/tag", json={"text": text}).json()
            assert len(body["labels"]) == len(body["tokens"]) > 10
            for slot in body["slots"]:
                assert slot["value"] == text[slot["start"]:slot["end"]]
                assert 0.0 < slot["confidence"] <= 1.0
            assert body["intent"]["name"]
            batch = http.post("/v1/tag/batch", json={"items": [{"text": text}, {"tokens": ["party", "of", "six"]}]})
            assert batch.status_code == 200
            assert batch.json()["items"][0]["labels"] == body["labels"]
    finally:
        assert stop_server(server) == 0


def test_contextual_model_with_onnx_backend_is_refused_at_start(contextual_model_dir: Path, tmp_path: Path):
    with pytest.raises(RuntimeError, match="torch backend only"):
        start_server(contextual_model_dir, tmp_path / "server.log", {**SERVER_ENV, "SLOTFILL_BACKEND": "onnx"},
                     timeout=60)
