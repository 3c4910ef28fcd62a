"""The progress bar every cltrain run shows (trainer.progress_bar=true): Lightning's, with the learner's own
progress-bar values.

Lightning would show a value logged with `self.log(..., prog_bar=True)`, but it reads every such value back from
its device at every batch end once it has been logged: on a GPU that is a host-device synchronisation per step,
which stalls the host until the GPU has drained its queue (1.02 per step on an H200, `scripts/profile_fit.py`,
docs/benchmarks.md). The learner instead puts plain floats in `Learner.bar_metrics` on the loggers' steps (every
`log_every_n_steps`) and on each phase's first batch (`Learner.log_loss`), and this bar shows them.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class LearnerBar(TQDMProgressBar):
    """TQDMProgressBar whose postfix adds the learner's `bar_metrics` (floats the learner read back itself)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.update(getattr(pl_module, "bar_metrics", {}))
        return metrics
