"""The Docker images, built and run for real: the API image answers through a container, and the train and
API containers run in order over a shared volume, as docker compose runs them, until the API's healthcheck
says healthy.

Needs a Docker engine; without one every test here skips, saying so. On a machine that reaches the package
index but no container registry, `bash ../shared/tools/docker-local.sh` provides the engine and a local base
image (``scripts/test.sh`` runs it where it is present); the CPU build of torch comes from this machine's pip
through a small index served on 127.0.0.1. Builds and runs use the host's network.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from service_testlib import REPO, free_port

from slotfill import schemes

pytestmark = pytest.mark.docker

LOCAL_BASE = "local/python:3.11-bookworm"
API_IMAGE, TRAIN_IMAGE = "slotfill-api:test", "slotfill-train:test"
SMALL = ["--set", "epochs=2", "hidden_size=32", "word_dim=16", "char_dim=8", "char_channels=16", "threads=2"]


def docker(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args[:3])} failed:\n{(result.stdout + result.stderr)[-4000:]}"
    return result


@pytest.fixture(scope="module")
def engine() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"no Docker engine reachable: {info.stderr.strip().splitlines()[-1:] or info.stdout[-200:]}")


@pytest.fixture(scope="module")
def base_image(engine) -> str:
    """The base the images build on: the local one docker-local.sh makes, else the Dockerfile's default."""
    if docker("image", "inspect", LOCAL_BASE, check=False).returncode == 0:
        return LOCAL_BASE
    return "python:3.11-slim"


@pytest.fixture(scope="module")
def torch_index(engine, tmp_path_factory) -> str:
    """An index on 127.0.0.1 holding the CPU build of torch this environment's pip gets (the official CPU
    index is not reachable from every machine); the train stage takes torch from it."""
    import torch

    folder = tmp_path_factory.mktemp("torch-index")
    project = folder / "simple" / "torch"
    project.mkdir(parents=True)
    version = torch.__version__.split("+")[0]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d",
                             str(project), f"torch=={version}"], capture_output=True, text=True, timeout=900)
    wheels = list(project.glob("torch-*+cpu-*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"pip here gives no CPU build of torch {version} to put in a local index")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def images(base_image, torch_index, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Both images, built from this checkout. The classic builder builds every stage up to the target, so
    the API image (the last stage) needs the torch index too."""
    build = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image}", "--build-arg",
             f"TORCH_INDEX_URL={torch_index}"]
    dangling_before = _dangling_images()
    try:
        docker(*build, "-t", API_IMAGE, str(REPO), timeout=1800)
        docker(*build, "--target", "train", "-t", TRAIN_IMAGE, str(REPO), timeout=1800)
        yield {"api": API_IMAGE, "train": TRAIN_IMAGE}
    finally:
        # Each build leaves about 2.7 GB (the two images and the untagged stages the classic builder keeps);
        # left behind, a few runs fill a small disk. Only what these builds made is removed.
        docker("rmi", "-f", API_IMAGE, TRAIN_IMAGE, check=False)
        made = sorted(_dangling_images() - dangling_before)
        if made:
            docker("rmi", *made, check=False)


def _dangling_images() -> set[str]:
    listed = docker("images", "--quiet", "--no-trunc", "--filter", "dangling=true", check=False)
    return set(listed.stdout.split())


def test_the_api_image_has_the_compiled_decoder_no_torch_and_no_compiler(images):
    probe = ("import importlib.util as u, json; import slotfill.decoding.kernels as k; "
             "print(json.dumps({'torch': u.find_spec('torch') is not None, 'kernels': k.available(), "
             "'onnxruntime': u.find_spec('onnxruntime') is not None}))")
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", images["api"], "-c", probe)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"torch": False, "kernels": True, "onnxruntime": True}
    assert docker("run", "--rm", "--entrypoint", "sh", images["api"], "-c", "command -v gcc cc",
                  check=False).returncode != 0
    [config] = json.loads(docker("image", "inspect", images["api"]).stdout)
    assert config["Config"]["User"] not in ("", "root", "0")
    assert "8000/tcp" in config["Config"]["ExposedPorts"]
    assert "/ready" in " ".join(config["Config"]["Healthcheck"]["Test"])
    [train] = json.loads(docker("image", "inspect", images["train"]).stdout)
    assert train["Config"]["User"] not in ("", "root", "0")
    version = docker("run", "--rm", "--entrypoint", "python", images["train"], "-c",
                     "import torch; print(torch.__version__)").stdout.strip()
    assert version.endswith("+cpu"), version


def _container_health(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()


def test_train_then_serve_over_a_shared_volume_as_compose_does(images, tmp_path):
    """compose's own commands and environment: the train container writes /models/current into a named
    volume; the API container, started after it with the volume read-only, turns healthy and answers /v1/tag,
    /v1/tag/batch and the Open Inference Protocol's /v2 infer."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    train, api = compose["services"]["train"], compose["services"]["api"]
    volume = f"slotfill-test-{free_port()}"
    name = f"{volume}-api"
    port = free_port()
    docker("volume", "create", volume)
    try:
        trained = docker("run", "--rm", "--network", "host", "-v", f"{volume}:/models", images["train"],
                         *train["command"], *SMALL, timeout=900)
        assert "model written to /models/current" in trained.stdout
        environment = {key: str(value) for key, value in api["environment"].items() if "$" not in str(value)}
        environment.update(SLOTFILL_PORT=str(port), SLOTFILL_HOST="127.0.0.1")
        started = time.monotonic()
        docker("run", "-d", "--name", name, "--network", "host", "-v", f"{volume}:/models:ro",
               *[arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")],
               images["api"], *api["command"])
        while _container_health(name) != "healthy":
            assert _container_health(name) != "unhealthy", docker("logs", name).stderr[-3000:]
            assert time.monotonic() - started < 120, "not healthy after 120 s"
            time.sleep(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            model = client.get("/v1/model").json()
            assert (model["backend"], model["decoder"]) == ("onnx", "c")
            text = "book a table for four at an italian place tomorrow at 7pm"
            answer = client.post("/v1/tag", json={"text": text}).json()
            labels = [token["label"] for token in answer["tokens"]]
            assert len(labels) == len(text.split()) and schemes.validate(labels, "IOB2") == []
            assert answer["intent"]["name"] in model["intents"]
            batch = client.post("/v1/tag/batch", json={"items": [{"text": text}, {"tokens": ["a", "b"]}]})
            assert batch.status_code == 200 and len(batch.json()["items"]) == 2
            # The Open Inference Protocol through the container: the same labels and intent as /v1/tag.
            infer = client.post(f"/v2/models/{model['name']}/infer", json={
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]})
            assert infer.status_code == 200, infer.text
            outputs = {output["name"]: output for output in infer.json()["outputs"]}
            assert json.loads(outputs["labels"]["data"][0]) == labels
            assert json.loads(outputs["intent"]["data"][0]) == answer["intent"]["name"]
    finally:
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", volume, check=False)
