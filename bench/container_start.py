"""The Docker images' sizes and the API container's start-to-ready time.

    .venv/bin/python bench/container_start.py --model runs/atis/seed0 [--api-image slotfill-api:dev]
        [--train-image slotfill-train:dev] [--runs 5]

Prints each image's size as ``docker image inspect`` gives it, then starts the API image ``--runs`` times
with the model folder mounted read-only at /models/current (compose's layout and environment, host
network, the onnx backend) and times, from just before ``docker run`` to the first 200 from /ready
(polled every 20 ms), each start; the container is removed after each run. Build the images first
(``docker build --target api -t slotfill-api:dev .`` and ``--target train``; README, "Docker").
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_to_ready(image: str, model: Path, timeout: float = 120.0) -> float:
    port = free_port()
    name = f"slotfill-bench-{port}"
    environment = {"SLOTFILL_MODEL_DIR": "/models/current", "SLOTFILL_HOST": "127.0.0.1",
                   "SLOTFILL_PORT": str(port), "SLOTFILL_BACKEND": "onnx", "SLOTFILL_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    try:
        docker("run", "-d", "--name", name, "--network", "host", "-v", f"{model.resolve()}:/models/current:ro",
               *[arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")], image,
               "slotfill", "serve")
        while not ready(port):
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"{image}: not ready after {timeout:.0f} s: {docker('logs', name)[-2000:]}")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="an artifact folder with model.onnx")
    parser.add_argument("--api-image", default="slotfill-api:dev")
    parser.add_argument("--train-image", default="slotfill-train:dev")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not (args.model / "manifest.json").is_file():
        parser.error(f"--model {args.model}: no manifest.json there")
    for image in (args.api_image, args.train_image):
        [info] = json.loads(docker("image", "inspect", image))
        print(f"{image}: {info['Size'] / 1e6:,.0f} MB")
    times = [start_to_ready(args.api_image, args.model) for _ in range(args.runs)]
    print("start to ready (s): " + ", ".join(f"{t:.2f}" for t in times)
          + f"; median {statistics.median(times):.2f}, best {min(times):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
