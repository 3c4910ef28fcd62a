"""Learning-speed probe: how fast each phase's starting weights learn the new task *alone*.

The facilitation plugin watches the run itself, where the new task shares every batch with rehearsal and
the optimizer carries the schedule's history, so its figures mix "these weights learn fast" with "this
schedule shows the new task often". The probe separates the two. At the start of every phase it trains a
copy of the network, with a fresh optimizer of the run's kind and learning rate, on batches of the new task
only (its own seeded sample order) for a fixed number of steps, and scores the copy on the new task's test
split every `eval_every` steps. The run's network, optimizer, global RNG and batches are never touched, so a
run with the probe ends with the same metrics as one without (tests/test_probe.py), plus the probe's fields.

Figures per phase (curve: test accuracy at steps 0, eval_every, ..., steps):
- `auc`: the area under that curve divided by the budget (trapezoids), a mean accuracy over the budget. It
  is the main figure because it rewards both starting high and rising fast, is defined for every phase, and
  averages over the evaluation points instead of resting on one noisy crossing;
- `final`: the accuracy after the whole budget;
- `steps_to_threshold`: the first evaluated step at or above `threshold` (null if never; resolution eval_every).
Phase 0 starts from the initial weights, identical across schedules for one seed: the from-scratch reference.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from cltrain.config import count, fraction
from cltrain.learners.base import OPTIMIZERS, Learner
from cltrain.nn.modes import in_mode
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext
from cltrain.seeding import generator, seeded
from cltrain.streams.loader import eval_batches


@dataclass
class ProbeConfig:
    steps: int = count(50, high=1_000_000)  # training steps of the copy on the new task (the fixed budget)
    eval_every: int = count(5, high=1_000_000)  # score the copy every this many steps (and at step 0)
    threshold: float = fraction(0.90, low_open=True)  # test accuracy for steps_to_threshold


def curve_figures(steps: list[int], acc: list[float], threshold: float) -> dict[str, Any]:
    """auc (trapezoid area / budget), final accuracy and the first step at or above the threshold."""
    s, a = np.asarray(steps, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    area = float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(s)))
    hit = np.nonzero(a >= threshold)[0]
    return {"auc": area / float(s[-1] - s[0]), "final": float(a[-1]),
            "steps_to_threshold": int(s[hit[0]]) if hit.size else None}


@PLUGINS.register("probe")
class Probe(Plugin):
    presentations = ("task_aware",)  # it needs to know the new task at each phase start
    Config = ProbeConfig
    name = "probe"

    def __init__(self, cfg: ProbeConfig, ctx: PluginContext):
        super().__init__(cfg, ctx)
        self.phases: list[dict[str, Any]] = []
        self.skipped: Optional[str] = None

    def on_task_start(self, learner: Learner, task_id: int) -> None:
        if not _plain_forward(learner):
            self.skipped = f"probe: {type(learner).__name__} computes its logits its own way; not probed"
            return
        phase = len(self.phases)
        # seeded() forks torch's global RNG: whatever the copy draws (dropout) leaves the run's draws alone
        with seeded(self.ctx.seed, "probe_model", phase), torch.enable_grad():
            steps, acc = self._train_copy(learner, task_id, phase)
        self.phases.append({"task": task_id, "steps": steps, "acc": acc,
                            **curve_figures(steps, acc, self.cfg.threshold)})

    def _train_copy(self, learner: Learner, task_id: int, phase: int) -> tuple[list[int], list[float]]:
        stream, batch_size = self.ctx.stream, self.ctx.batch_size
        model = copy.deepcopy(learner.model)
        optimizer = OPTIMIZERS[learner.optim_cfg.name](model.parameters(), learner.optim_cfg)
        rows = _rows(stream.tasks[task_id], batch_size * self.cfg.steps, generator(self.ctx.seed, "probe", phase))
        ids = torch.full((batch_size,), task_id, dtype=torch.long, device=rows.device)
        steps, acc = [0], [self._score(learner, model, task_id)]
        for step in range(1, self.cfg.steps + 1):
            base = rows[(step - 1) * batch_size: step * batch_size]
            x, y = stream.train_batch(base, ids[: base.numel()])
            model.train()
            loss = F.cross_entropy(learner.mask(model(x), ids[: base.numel()]), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % self.cfg.eval_every == 0 or step == self.cfg.steps:
                steps.append(step)
                acc.append(self._score(learner, model, task_id))
        return steps, acc

    @torch.no_grad()
    def _score(self, learner: Learner, model: torch.nn.Module, task_id: int) -> float:
        hits = total = 0
        with in_mode(model, False):
            for x, y in eval_batches(self.ctx.stream, task_id, 2000):
                t = torch.full_like(y, task_id)
                hits += int((learner.mask(model(x), t).argmax(1) == y).sum())
                total += y.numel()
        return hits / max(total, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"phases": self.phases, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phases, self.skipped = list(state["phases"]), state.get("skipped")

    def final_metrics(self, ctx) -> dict[str, Any]:
        later = self.phases[1:]  # phase 0 has nothing earlier to be helped by
        mean = lambda key: float(np.mean([p[key] for p in later])) if later else math.nan  # noqa: E731
        out: dict[str, Any] = {"probe": {"steps": self.cfg.steps, "eval_every": self.cfg.eval_every,
                                         "threshold": self.cfg.threshold, "phases": self.phases},
                               "probe_auc_mean": mean("auc"), "probe_final_mean": mean("final")}
        if self.skipped:
            out["warnings"] = [self.skipped]
        return out


def _plain_forward(learner: Learner) -> bool:
    """The probe trains `learner.model` with the base learner's masking: methods that build their logits
    otherwise (expert pools, prompts, modulators) would be probed on a different network than they train."""
    return type(learner).forward is Learner.forward and type(learner).logits is Learner.logits


def _rows(task, n: int, gen: torch.Generator) -> torch.Tensor:
    """n training rows of one task in a seeded order (several passes if the task has fewer rows)."""
    passes = -(-n // task.n_train)
    perm = torch.cat([torch.randperm(task.n_train, generator=gen) for _ in range(passes)])[:n]
    return task.train_idx[perm.to(task.train_idx.device)]
