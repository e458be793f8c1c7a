"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

Commands must parse with the real CLI parser, health checks must hit a route the app has,
ports and volumes must agree, the image must not run as root and must pin CPU torch.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import tomllib
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
    assert train["build"]["target"] == "train" and api["build"]["target"] == "api"
    assert train["image"] != api["image"], "the API image has no torch; the training image does"
    assert api["environment"]["SLOTFILL_BACKEND"] == "onnx"


def test_compose_commands_parse(compose: dict, cli_parser) -> None:
    train = parse_cli(cli_parser, compose["services"]["train"]["command"])
    assert train.command == "train"
    assert str(train.out) == "/models/current"
    serve = parse_cli(cli_parser, compose["services"]["api"]["command"])
    assert serve.command == "serve"
    assert str(serve.model_dir) == "/models/current" == compose["services"]["api"]["environment"]["SLOTFILL_MODEL_DIR"]
    assert serve.host == "0.0.0.0"
    container_ports = {int(str(mapping).rsplit(":", 1)[-1]) for mapping in compose["services"]["api"]["ports"]}
    assert container_ports == {serve.port}


def test_compose_trains_on_the_bundled_sample(compose: dict, cli_parser) -> None:
    data = parse_cli(cli_parser, compose["services"]["train"]["command"]).data
    # "sample" names the data set bundled inside the installed package.
    assert data == "sample"
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


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (the FROM line included); stages inherit nothing here."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for name, args in dockerfile_instructions():
        if name == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = stages.setdefault(match.group(2), [])
        assert current is not None, "instructions before the first FROM"
        current.append((name, args))
    return stages


def by_name(instructions: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, args in instructions:
        grouped.setdefault(name, []).append(args)
    return grouped


def assert_non_root_before_cmd(instructions: list[tuple[str, str]]) -> None:
    grouped = by_name(instructions)
    assert grouped["USER"] and grouped["USER"][-1] not in ("root", "0", "0:0")
    names = [name for name, _ in instructions]
    assert names.index("USER") < names.index("CMD")


def test_dockerfile_stages() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["base", "wheel", "train", "api"], "api is last: a plain `docker build` gives the API image"
    assert by_name(stages["base"])["FROM"] == ["python:3.11-slim AS base"]
    assert by_name(stages["wheel"])["FROM"] == ["base AS wheel"]
    assert by_name(stages["train"])["FROM"] == ["base AS train"]
    assert by_name(stages["api"])["FROM"] == ["base AS api"]


def test_train_image_pins_cpu_torch(cli_parser) -> None:
    stage = dockerfile_stages()["train"]
    runs = " ".join(by_name(stage)["RUN"])
    pin = re.search(r"pip install (?:[^&]*\s)?torch==([\d.]+)\s+--index-url\s+https://download\.pytorch\.org/whl/cpu",
                    runs)
    assert pin, runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    torch_spec = next(dep for dep in pyproject["project"]["optional-dependencies"]["train"] if re.match(r"torch\b", dep))
    assert pin.group(1) in SpecifierSet(torch_spec[len("torch"):])
    assert re.search(r'pip install "\$\(ls /wheels/slotfill-\*\.whl\)\[\$\{EXTRAS\}\]"', runs), \
        "the wheel built in the wheel stage, with the EXTRAS extras"
    assert "/wheels" in by_name(stage)["COPY"][0] and by_name(stage)["COPY"][0].startswith("--from=wheel ")
    args = dict(arg.split("=", 1) for arg in by_name(stage)["ARG"])
    assert args["EXTRAS"] == "train", "the train extra by default"
    assert "contextual" in pyproject["project"]["optional-dependencies"]  # the documented --build-arg
    assert_non_root_before_cmd(stage)
    assert parse_cli(cli_parser, exec_form(by_name(stage)["CMD"][-1])).command == "train"


def test_api_image_installs_only_the_hashed_lock(cli_parser, app_paths: set[str]) -> None:
    stage = dockerfile_stages()["api"]
    grouped = by_name(stage)
    runs = " ".join(grouped["RUN"])
    assert "torch" not in runs
    assert re.search(r"pip install --require-hashes --no-deps -r requirements/serve\.lock", runs)
    assert re.search(r"pip install --no-deps /wheels/slotfill-\*\.whl(\s|$)", runs), \
        "the package itself (the wheel stage's build, with the compiled decoder), without resolving anything"
    assert "--from=wheel /wheels /wheels" in grouped["COPY"]
    assert "gcc" not in runs and "apt-get" not in runs, "no compiler in the API image"
    assert any("requirements/serve.lock" in args for args in grouped["COPY"])
    assert_non_root_before_cmd(stage)
    assert grouped["EXPOSE"] == ["8000"]
    assert any("/models" in volume for volume in grouped["VOLUME"])
    assert any("SLOTFILL_BACKEND=onnx" in env for env in grouped["ENV"])
    [healthcheck] = grouped["HEALTHCHECK"]
    assert healthcheck_path(healthcheck) == "/ready" and "/ready" in app_paths
    assert "curl" not in healthcheck
    serve = parse_cli(cli_parser, exec_form(grouped["CMD"][-1]))
    assert serve.command == "serve"
    assert str(serve.model_dir) == "/models/current"
    assert serve.host == "0.0.0.0"
    assert str(serve.port) == grouped["EXPOSE"][0]
    assert re.search(r":8000/ready", healthcheck)


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
    copied = {source for name, args in dockerfile_instructions() if name == "COPY" for source in args.split()[:-1]}
    assert "requirements/serve.lock" in copied
    assert not copied & ignored, "a COPY source is excluded by .dockerignore"


def test_wheel_stage_builds_the_compiled_decoder_and_refuses_a_wheel_without_it() -> None:
    stage = dockerfile_stages()["wheel"]
    grouped = by_name(stage)
    runs = " ".join(grouped["RUN"])
    assert re.search(r"apt-get install -y --no-install-recommends gcc libc6-dev", runs)
    assert any(args.split()[0] == "setup.py" or "setup.py" in args.split()[:-1] for args in grouped["COPY"]), \
        "setup.py declares the extension"
    assert re.search(r"pip wheel --no-deps --wheel-dir /wheels \.", runs)
    assert "slotfill/decoding/_kernels" in runs and "sys.exit" in runs
