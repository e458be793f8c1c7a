"""The training pipeline: data -> model -> training loop -> evaluation -> artifact.

:func:`train` and ``Trainer(...).run()`` are the entry points; the parts are in
training/prepare.py (the data), training/loop.py (the epochs) and training/finish.py (the artifact).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from slotfill.errors import ConfigError

from . import distributed
from .checkpoint import remove_partial_writes
from .config import TrainConfig
from .finish import Finisher, TrainResult
from .loop import TrainingError, TrainingLoop
from .prepare import TrainingData

STATE_DIR = "training"


class Trainer:
    """One training run from ``data_dir`` to the artifact in ``out_dir``; ``data`` holds the prepared
    data once :meth:`run` has read it."""

    def __init__(self, data_dir: str | Path, out_dir: str | Path, config: TrainConfig, *, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None, log=None):
        config.validate()
        self.config = config
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.state_dir = self.out_dir / STATE_DIR
        self.resume = resume
        self.overwrite = overwrite
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.dist = distributed.SINGLE  # set by run(); a lone process unless started by torchrun
        self.data: TrainingData | None = None

    def run(self) -> TrainResult:
        """Train, evaluate and export; under torchrun (WORLD_SIZE > 1) as one rank of a data-parallel job."""
        with distributed.process_group() as ctx:
            self.dist = ctx
            if not ctx.is_main:
                # Rank 0 speaks for the job: N copies of every line would only be noise.
                self.log, self.progress = (lambda message: None), False
            return self._train()

    def _train(self) -> TrainResult:
        cfg, ctx = self.config, self.dist
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._claim_out_dir()
        self.data = data = TrainingData(self.data_dir, cfg, log=self.log, progress=self.progress)
        # Sharding by sentence index only works if index i is the same sentence everywhere.
        if not ctx.same_everywhere(data.fingerprint()):
            raise TrainingError("the ranks built different vocabularies, labels or training sets; every rank must "
                                "read the same data with the same settings")
        if ctx.is_main:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            remove_partial_writes(self.state_dir)
            remove_partial_writes(self.out_dir)
        model = data.build_model().to(ctx.device)
        if cfg.contextual and not cfg.contextual_finetune:
            data.cache_contextual(model, ctx.device, progress=self.progress)
        loop = TrainingLoop(cfg, data, self.state_dir, resume=self.resume, dist=ctx, progress=self.progress,
                            log=self.log)
        outcome = loop.run(model)
        return Finisher(data, self.out_dir, self.state_dir, dist=ctx, log=self.log).run(model, outcome)

    def _check_out_dir(self) -> None:
        last = self.state_dir / "last.safetensors"
        if self.resume:
            return
        if self.out_dir.exists() and any(self.out_dir.iterdir()) and not self.overwrite:
            what = "a training run" if last.exists() else "files"
            raise ConfigError(f"{self.out_dir} already holds {what}; pass --resume to continue it, --overwrite to "
                              "start over, or choose another --out")
        if self.overwrite and self.state_dir.exists():
            for name in ("last.safetensors", "metrics.jsonl"):
                (self.state_dir / name).unlink(missing_ok=True)

    def _claim_out_dir(self) -> None:
        """Rank 0 checks (and with --overwrite clears) the output directory; every rank obeys its verdict.

        The other ranks do not look for themselves: they could already see files rank 0 has begun to write.
        """
        problem = None
        if self.dist.is_main:
            try:
                self._check_out_dir()
            except ConfigError as exc:
                problem = exc
        if not self.dist.broadcast_flag(problem is None):
            raise problem or ConfigError(f"{self.out_dir}: rank 0 refused the output directory (see its message)")


def train(data_dir: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None, seed: int | None = None,
          *, config: TrainConfig | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, log=None) -> TrainResult:
    """Train on ``data_dir`` and export the artifact to ``out_dir``."""
    config = config or TrainConfig()
    for key, value in (overrides or {}).items():
        config.set(key, value, source="overrides")
    if seed is not None:
        config.seed = seed
    return Trainer(data_dir, out_dir, config, resume=resume, overwrite=overwrite, progress=progress, log=log).run()
