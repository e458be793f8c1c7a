"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

Commands must parse with the real CLI parser, health checks must hit a route the app has,
ports and volumes must agree, the image must not run as root and must pin CPU torch.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from service_testlib import REPO

from service.app import create_app
from service.settings import Settings

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        logical.append(current)
        current = ""
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


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
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/]*)", text)
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
    assert train.get("image") == api.get("image")


def test_compose_commands_parse(compose: dict, cli_parser) -> None:
    train = parse_cli(cli_parser, compose["services"]["train"]["command"])
    assert train.command == "train"
    assert str(train.out) == "/models/current"
    serve = parse_cli(cli_parser, compose["services"]["api"]["command"])
    assert serve.command == "serve"
    assert str(serve.model) == "/models/current" == compose["services"]["api"]["environment"]["SLOTFILL_MODEL_DIR"]
    assert serve.host == "0.0.0.0"
    container_ports = {int(str(mapping).rsplit(":", 1)[-1]) for mapping in compose["services"]["api"]["ports"]}
    assert container_ports == {serve.port}


def test_compose_trains_on_the_bundled_sample(compose: dict, cli_parser) -> None:
    data = parse_cli(cli_parser, compose["services"]["train"]["command"]).data
    # "sample" names the data set bundled inside the installed package.
    assert data == "sample"
    from training.cli import _data_dir

    assert _data_dir(data) == REPO / "slotfill" / "resources" / "sample"
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


def test_dockerfile(cli_parser, app_paths: set[str]) -> None:
    instructions = dockerfile_instructions()
    by_name: dict[str, list[str]] = {}
    for name, args in instructions:
        by_name.setdefault(name, []).append(args)
    assert by_name["FROM"] == ["python:3.11-slim"]
    # Non-root, and the USER comes before the CMD.
    users = by_name["USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    names = [name for name, _ in instructions]
    assert names.index("USER") < names.index("CMD")
    # CPU torch, pinned exactly, satisfying the package's own requirement.
    runs = " ".join(by_name["RUN"])
    pin = re.search(r"pip install (?:[^&]*\s)?torch==([\d.]+)\s+--index-url\s+https://download\.pytorch\.org/whl/cpu",
                    runs)
    assert pin, runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    torch_spec = next(dep for dep in pyproject["project"]["dependencies"] if re.match(r"torch\b", dep))
    assert pin.group(1) in SpecifierSet(torch_spec[len("torch"):])
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", runs), "the package itself is installed"
    # Port, volume, health check, command.
    assert by_name["EXPOSE"] == ["8000"]
    assert any("/models" in volume for volume in by_name["VOLUME"])
    [healthcheck] = by_name["HEALTHCHECK"]
    assert healthcheck_path(healthcheck) == "/ready" and "/ready" in app_paths
    assert "curl" not in healthcheck
    command = exec_form(by_name["CMD"][-1])
    serve = parse_cli(cli_parser, command)
    assert serve.command == "serve"
    assert str(serve.model) == "/models/current"
    assert serve.host == "0.0.0.0"
    assert str(serve.port) == by_name["EXPOSE"][0]
    assert re.search(r":8000/ready", healthcheck)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    copied = {source for name, args in dockerfile_instructions() if name == "COPY" for source in args.split()[:-1]}
    assert not copied & ignored, "a COPY source is excluded by .dockerignore"
