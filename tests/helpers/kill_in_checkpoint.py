"""Run ``slotfill`` so that it dies inside the write of one epoch's checkpoint, as a kill or power cut would.

    python tests/helpers/kill_in_checkpoint.py EPOCH -- train --data ... --out ...

The process writing that epoch's checkpoint leaves half a temp file, named as the atomic writer
names its temp files (``.last.safetensors.*.tmp``), beside the previous complete checkpoint and
SIGKILLs itself; every other write goes through unchanged. Under torchrun (which
runs this script on every rank) only rank 0 writes checkpoints, so only rank 0 dies.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when run as a script

import training.checkpoint  # noqa: E402
from training.cli import main  # noqa: E402


def checkpoint_epoch_of(data: bytes) -> int:
    """The epoch in a serialised checkpoint's metadata (safetensors: 8-byte header size, JSON header)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    return int(json.loads(header["__metadata__"]["slotfill"])["state"]["epoch"])


def kill_in_write_of(epoch: int):
    write = training.checkpoint.atomic_write_bytes

    def write_or_die(path: Path, data: bytes) -> None:
        if checkpoint_epoch_of(data) != epoch:
            write(path, data)
            return
        fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    return write_or_die


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] != "--" or not sys.argv[1].isdigit():
        sys.exit(f"usage: {sys.argv[0]} EPOCH -- SLOTFILL_ARGS...")
    training.checkpoint.atomic_write_bytes = kill_in_write_of(int(sys.argv[1]))
    sys.exit(main(sys.argv[3:]))
