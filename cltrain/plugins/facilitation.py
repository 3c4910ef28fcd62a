"""Forward facilitation: how fast each new task is learned (Gandhi et al., power-law rehearsal).

For the new task of every phase it records the training accuracy on that task's rows of each batch (from
the logits the learner hands to callbacks, so no extra forward pass), then reports the iterations until the
running accuracy first reaches a criterion, and the running accuracy after a fixed number of iterations.
Task-aware streams only: the new task is what `on_task_start` names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from cltrain.config import count, fraction
from cltrain.distributed import all_sum, to_device
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext


@dataclass
class FacilitationConfig:
    criterion: float = fraction(0.90, low_open=True)  # training accuracy that counts as "learned"
    window: int = count(10, high=1_000_000)  # batches in the running accuracy (single batches are noisy)
    fixed_iters: int = count(50)  # report the running accuracy after this many iterations


def running_accuracy(correct: np.ndarray, total: np.ndarray, window: int) -> np.ndarray:
    """Accuracy over the last `window` batches, at every iteration (pooled counts, not a mean of means)."""
    c, t = np.cumsum(correct), np.cumsum(total)
    c_lag = np.concatenate([np.zeros(window), c[:-window]]) if len(c) > window else np.zeros_like(c)
    t_lag = np.concatenate([np.zeros(window), t[:-window]]) if len(t) > window else np.zeros_like(t)
    return (c - c_lag) / np.maximum(t - t_lag, 1)


@PLUGINS.register("facilitation")
class Facilitation(Plugin):
    presentations = ("task_aware",)  # the new task is what on_task_start names
    Config = FacilitationConfig
    name = "facilitation"

    def __init__(self, cfg: FacilitationConfig, ctx: PluginContext):
        super().__init__(cfg, ctx)
        self.task: Optional[int] = None
        self.counts: list[torch.Tensor] = []  # per batch [correct, total] on the new task, kept on the device
        self.iters_to_criterion: list[Optional[int]] = []
        # New-task samples seen until the criterion: with rehearsal the new task fills only part of each
        # batch, so iterations alone would mistake dilution for slower learning.
        self.samples_to_criterion: list[Optional[int]] = []
        self.acc_at_iters: list[float] = []
        self.tasks: list[int] = []

    def on_task_start(self, learner, task_id: int) -> None:
        self.task, self.counts = task_id, []

    def on_train_start(self, trainer, pl_module) -> None:
        self.counts = to_device(self.counts, pl_module.device)  # restored mid-phase counts arrive on the CPU

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch, batch_idx: int) -> None:
        if self.task is None or batch.t is None or not isinstance(outputs, dict) or "logits" not in outputs:
            return
        new = slice(0, batch.n_new)
        rows = batch.t[new] == self.task
        hit = (outputs["logits"][new].argmax(1) == batch.y[new]) & rows
        self.counts.append(torch.stack([hit.sum(), rows.sum()]))  # no host sync per step

    def on_task_end(self, learner, task_id: int) -> None:
        if not self.counts:
            return
        counts = all_sum(torch.stack(self.counts).double()).cpu().numpy()  # every rank's share of the batches
        acc = running_accuracy(counts[:, 0], counts[:, 1], self.cfg.window)
        reached = np.nonzero(acc >= self.cfg.criterion)[0]
        self.iters_to_criterion.append(int(reached[0]) + 1 if reached.size else None)
        seen = np.cumsum(counts[:, 1])
        self.samples_to_criterion.append(int(seen[reached[0]]) if reached.size else None)
        at = min(self.cfg.fixed_iters, len(acc)) - 1
        self.acc_at_iters.append(float(acc[at]))
        self.tasks.append(task_id)
        self.task, self.counts = None, []

    def state_dict(self) -> dict[str, Any]:
        # task and counts are non-empty only in a mid-phase (preemption) checkpoint
        return {"iters": self.iters_to_criterion, "samples": self.samples_to_criterion,
                "acc": self.acc_at_iters, "tasks": self.tasks,
                "task": self.task, "counts": [c.cpu() for c in self.counts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iters_to_criterion, self.acc_at_iters, self.tasks = state["iters"], state["acc"], state["tasks"]
        self.samples_to_criterion = state.get("samples", [])
        self.task, self.counts = state.get("task"), list(state.get("counts", []))

    def final_metrics(self, ctx) -> dict[str, Any]:
        reached = [i for i in self.iters_to_criterion[1:] if i is not None]  # task 0 has nothing to be helped by
        out = {
            "facilitation": {
                "criterion": self.cfg.criterion, "window": self.cfg.window, "fixed_iters": self.cfg.fixed_iters,
                "tasks": self.tasks, "iters_to_criterion": self.iters_to_criterion,
                "samples_to_criterion": self.samples_to_criterion, "acc_at_iters": self.acc_at_iters,
            },
            "facilitation_iters_mean": float(np.mean(reached)) if reached else math.nan,
            "facilitation_acc_mean": float(np.mean(self.acc_at_iters[1:])) if len(self.acc_at_iters) > 1 else math.nan,
        }
        if self.ctx.run_dir and self.tasks:
            from cltrain.plots import facilitation_png

            facilitation_png(self.iters_to_criterion, self.acc_at_iters, self.cfg, f"{self.ctx.run_dir}/facilitation.png")
        return out
