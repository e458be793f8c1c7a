"""docker-compose.yml and the serving lock, checked against the real CLI parser, settings and app.

The images themselves are built and run by tests/service/test_service_docker.py.
"""

from __future__ import annotations

import re

import pytest
import tomllib
import yaml
from service_testlib import REPO

from service.app import create_app
from service.settings import Settings

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def cli_parser():
    from training.cli import build_parser

    return build_parser()


@pytest.fixture(scope="module")
def app_paths() -> set[str]:
    return set(create_app(Settings()).openapi()["paths"])


def parse_cli(parser, command: list[str]):
    assert command[0] == "slotfill", command
    try:
        return parser.parse_args(command[1:])
    except SystemExit as exc:  # argparse reports unknown subcommands/flags by exiting
        pytest.fail(f"{command} does not parse with training.cli.build_parser(): exit {exc.code}")


def healthcheck_path(command: list[str] | str) -> str:
    text = command if isinstance(command, str) else " ".join(command)
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+|%s)(/[\w/]*)", text)
    assert match, text
    return match.group(2)


def test_compose_services_and_volume(compose: dict) -> None:
    assert {"train", "api"} <= set(compose["services"])
    assert "models" in compose["volumes"]
    train, api = compose["services"]["train"], compose["services"]["api"]
    assert any(volume.split(":")[0] == "models" and volume.split(":")[1] == "/models" for volume in train["volumes"])
    assert any(volume.split(":")[0] == "models" and volume.split(":")[1] == "/models" for volume in api["volumes"])
    assert api["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert api["environment"]["SLOTFILL_MODEL_DIR"] == "/models/current"
    assert train["build"]["target"] == "train" and api["build"]["target"] == "api"
    assert train["image"] != api["image"], "the API image has no torch; the training image does"
    assert api["environment"]["SLOTFILL_BACKEND"] == "onnx"


def test_compose_commands_parse(compose: dict, cli_parser) -> None:
    train = parse_cli(cli_parser, compose["services"]["train"]["command"])
    assert train.command == "train"
    assert str(train.out) == "/models/current"
    api = compose["services"]["api"]
    serve = parse_cli(cli_parser, api["command"])
    assert serve.command == "serve"
    # What the flags leave open comes from SLOTFILL_* variables: the service's own settings read them.
    settings = Settings(**{key[len("SLOTFILL_"):].lower(): value for key, value in api["environment"].items()
                           if key.startswith("SLOTFILL_") and value and "$" not in str(value)})
    assert str(settings.model_dir) == "/models/current" and settings.host == "0.0.0.0"
    container_ports = {int(str(mapping).rsplit(":", 1)[-1]) for mapping in api["ports"]}
    assert container_ports == {settings.port}


def test_compose_trains_on_the_bundled_sample(compose: dict, cli_parser) -> None:
    args = parse_cli(cli_parser, compose["services"]["train"]["command"])
    data = args.data
    # "sample" names the data set bundled inside the installed package, and the recipe shipped with it.
    assert data == "sample"
    assert args.config == REPO / "slotfill" / "resources" / "sample" / "recipe.json" and args.config.is_file()
    from training.cli._options import data_dir

    assert data_dir(data) == REPO / "slotfill" / "resources" / "sample"
    local = REPO / "slotfill" / "resources" / "sample"
    assert all((local / split).is_dir() for split in ("train", "valid", "test"))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any("resources" in pattern for pattern in pyproject["tool"]["setuptools"]["package-data"]["slotfill"])


def test_compose_healthcheck_hits_ready(compose: dict, app_paths: set[str]) -> None:
    check = compose["services"]["api"]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert "curl" not in " ".join(check["test"]) and "wget" not in " ".join(check["test"])
    assert healthcheck_path(check["test"]) == "/ready"
    assert "/ready" in app_paths


def test_serve_lock_pins_every_package_with_hashes_and_no_torch() -> None:
    lock = (REPO / "requirements" / "serve.lock").read_text()
    requirements = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.MULTILINE)
    names = {name.lower() for name, _ in requirements}
    assert {"onnxruntime", "fastapi", "uvicorn", "pydantic", "numpy", "safetensors"} <= names
    assert not names & {"torch", "transformers", "seqeval", "matplotlib"}
    # Each requirement is followed by at least one sha256 hash.
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", lock, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(requirements)
    assert all(re.search(r"--hash=sha256:[0-9a-f]{64}", block) for block in blocks)
    assert "--index-url" not in lock and "file://" not in lock, "no machine-local index in the lock"
    # Every base and serve dependency of the package is in the lock.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["serve"]
    for dependency in wanted:
        name = re.match(r"[A-Za-z0-9_.-]+", dependency).group(0).lower()
        assert name in names, f"{name} is missing from requirements/serve.lock: run bash scripts/lock.sh"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
