"""IBCL's zero-shot models and its per-phase evaluation, computed at the end of a run from the knowledge base.

Every entry of the knowledge base knows the phase that added it, so the credal set as it stood after any phase
is recovered exactly, and the evaluation after phase p uses only what existed then.

For a preference w over the tasks seen by phase p, the candidates are the barycenter's mean model and K samples
from its 1 - alpha region; the one with the best w-weighted accuracy on the tasks' validation splits (carved
from training data) is *picked*. No candidate is trained: building one costs a weighted sum and a draw.

Figures (metrics.json, prefix `ibcl_`), per phase, over `n_preferences` random preferences (Dirichlet(1),
drawn from a fixed seed so every run and seed meets the same ones):
- `pref_acc_mean_model`, `pref_acc_picked`: the mean over preferences of the w-weighted test accuracy
  (sum_k w_k acc_k) of the mean model / of the validation-picked model;
- `paper_avg_acc`, `paper_peak_acc`: the paper's "average" and "peak per-task accuracy": the mean over
  preferences of the average / the best w-weighted test accuracy over the K samples (peak picks on the test
  set, as the paper does; reported to compare with it, not as our result);
- one-hot preferences give the matrix `onehot_acc[p][k]` (picked model for w = e_k, on task k), from which
  the standard BWT (`bwt_onehot`, last phase vs the phase that learned the task) and the reference's per-step
  version (`bwt_paper_per_phase`: at each phase, the mean over earlier tasks of that difference) follow;
- `uniform_pref_acc`: the picked model of the uniform preference.
Plus the two-task Pareto front (final knowledge base) and the buffer size per phase, also drawn as
ibcl_pareto.png and ibcl_buffer.png in the run folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cltrain.learners.ibcl import to_labels
from cltrain.learners.ibcl_credal import sample_region
from cltrain.seeding import generator
from cltrain.streams.base import Stream

# The evaluation's random preferences are the same for every run seed (seeds are compared on the same
# preferences); the region samples follow the run seed. Both through cltrain/seeding.py.
PREFERENCE_SEED = 0
PARETO_WEIGHTS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


class TaskData:
    """Each task's validation and test inputs, gathered once on the device, scored for many models at once."""

    def __init__(self, stream: Stream, batch_size: int):
        self.stream, self.batch_size = stream, batch_size
        self._cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def data(self, task_id: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if (task_id, split) not in self._cache:
            task = self.stream.tasks[task_id]
            arrays = self.stream.test if split == "test" else self.stream.train
            idx = (task.test_idx if split == "test" else task.val_idx).to(arrays.labels.device)
            ids = torch.full_like(idx, task_id)
            self._cache[(task_id, split)] = (self.stream.transform(arrays.images[idx], ids), arrays.labels[idx])
        return self._cache[(task_id, split)]

    @torch.no_grad()
    def accuracy(self, head, thetas: torch.Tensor, task_id: int, split: str) -> torch.Tensor:
        """[M] accuracy of each weight vector in thetas [M, P] on one task's split."""
        x, y = self.data(task_id, split)
        correct = torch.zeros(thetas.shape[0], dtype=torch.float64, device=thetas.device)
        for start in range(0, len(y), self.batch_size):
            pred = to_labels(head.functional(x[start:start + self.batch_size], thetas))
            correct += (pred == y[start:start + self.batch_size]).sum(1)
        return (correct / max(len(y), 1)).cpu()

    def matrix(self, head, thetas: torch.Tensor, tasks: list[int], split: str) -> torch.Tensor:
        """[M, T] accuracies of M models on T tasks."""
        return torch.stack([self.accuracy(head, thetas, t, split) for t in tasks], 1)


@dataclass
class ZeroShot:
    """The candidates for one preference and how they score; row 0 is the mean model, rows 1.. the samples."""

    thetas: torch.Tensor  # [1 + K, P]
    val: torch.Tensor  # [1 + K, T] per-task validation accuracy
    test: torch.Tensor  # [1 + K, T] per-task test accuracy
    w: torch.Tensor  # [T]

    @property
    def pick(self) -> int:
        return int((self.val @ self.w).argmax())

    def weighted_test(self) -> torch.Tensor:
        return self.test @ self.w


def zero_shot(learner, data: TaskData, phase: int, tasks: list[int], w: torch.Tensor, alpha: float, k: int,
              generator: torch.Generator, with_test: bool = True) -> ZeroShot:
    mu, sigma = learner.preference_mean(phase, tasks, w)
    thetas = torch.cat([mu[None], sample_region(mu, sigma, alpha, k, generator)]).to(learner.device)
    head = learner.model
    test = data.matrix(head, thetas, tasks, "test") if with_test else torch.empty(0)
    return ZeroShot(thetas, data.matrix(head, thetas, tasks, "val"), test, w.to(torch.float64))


def random_preferences(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """n draws from the flat Dirichlet on the simplex over `size` tasks (normalised exponentials)."""
    e = -torch.log(torch.rand(n, size, generator=generator, dtype=torch.float64))
    return list(e / e.sum(1, keepdim=True))


def _phase_figures(learner, data: TaskData, phase: int) -> dict[str, Any]:
    m = learner.method
    tasks = sorted(learner.kb.extremes_at(phase))
    gen = generator(PREFERENCE_SEED, "ibcl_preferences", phase)
    sample_gen = generator(learner.seed, "ibcl_region_samples", phase)
    shots = [zero_shot(learner, data, phase, tasks, w, m.alpha, m.n_samples, sample_gen)
             for w in random_preferences(m.n_preferences, len(tasks), gen)]
    onehot = {}
    for i, t in enumerate(tasks):
        shot = zero_shot(learner, data, phase, tasks, torch.eye(len(tasks), dtype=torch.float64)[i], m.alpha,
                         m.n_samples, sample_gen)
        onehot[t] = float(shot.test[shot.pick, i])
    uniform = zero_shot(learner, data, phase, tasks, torch.full((len(tasks),), 1.0 / len(tasks), dtype=torch.float64),
                        m.alpha, m.n_samples, sample_gen)

    def mean(values) -> float | None:
        return float(np.mean(values)) if len(values) else None

    return {
        "tasks": tasks,
        "pref_acc_mean_model": mean([float(s.weighted_test()[0]) for s in shots]),
        "pref_acc_picked": mean([float(s.weighted_test()[s.pick]) for s in shots]),
        "paper_avg_acc": mean([float(s.weighted_test()[1:].mean()) for s in shots]),
        "paper_peak_acc": mean([float(s.weighted_test()[1:].max()) for s in shots]),
        "paper_low_acc": mean([float(s.weighted_test()[1:].min()) for s in shots]),
        "onehot": onehot,
        "uniform_pref_acc": float(uniform.weighted_test()[uniform.pick]),
    }


def _bwt(onehot: list[dict[int, float]], order: list[int]) -> tuple[float | None, list[float | None]]:
    """Standard BWT of the one-hot preference models, and the reference's per-phase average of differences."""
    first = {}
    for p, t in enumerate(order):
        first.setdefault(t, p)

    def at(p: int) -> float | None:
        diffs = [onehot[p][t] - onehot[first[t]][t] for t in onehot[p] if first[t] < p]
        return float(np.mean(diffs)) if diffs else None
    last = len(onehot) - 1
    return at(last), [at(p) for p in range(len(onehot))]


def pareto_front(learner, data: TaskData, pair: list[int]) -> dict[str, Any] | None:
    """Preferences (a, 1 - a) over two tasks on the final knowledge base: mean model, samples and the pick."""
    last = len(learner.kb.phase_tasks) - 1
    if not set(pair) <= set(learner.kb.extremes_at(last)):
        return None
    gen = generator(learner.seed, "ibcl_pareto_samples")
    points = []
    for a in PARETO_WEIGHTS:
        w = torch.tensor([a, 1 - a], dtype=torch.float64)
        shot = zero_shot(learner, data, last, pair, w, learner.method.alpha, learner.method.n_samples, gen)
        points.append({"w": [a, 1 - a], "mean_model": shot.test[0].tolist(), "picked": shot.test[shot.pick].tolist(),
                       "samples": shot.test[1:].tolist()})
    return {"tasks": pair, "points": points}


def ibcl_metrics(learner, ctx) -> dict[str, Any]:
    kb = learner.kb
    if not kb.phase_tasks:
        return {}
    data = TaskData(ctx.stream, ctx.eval_batch_size)
    phases = [_phase_figures(learner, data, p) for p in range(len(kb.phase_tasks))]
    bwt, bwt_steps = _bwt([f["onehot"] for f in phases], ctx.stream.order[:len(phases)])
    pareto = pareto_front(learner, data, list(learner.method.pareto_tasks))
    n_chains = learner.model.n_chains
    out = {
        "ibcl_buffer_size": [kb.size_at(p) for p in range(len(phases))],
        "ibcl_entries": {"task": kb.task, "chain": kb.chain, "phase": kb.phase},
        "ibcl_phase_extremes": kb.phase_extremes,
        "ibcl_pref_acc_mean_model": [f["pref_acc_mean_model"] for f in phases],
        "ibcl_pref_acc_picked": [f["pref_acc_picked"] for f in phases],
        "ibcl_paper_avg_acc": [f["paper_avg_acc"] for f in phases],
        "ibcl_paper_peak_acc": [f["paper_peak_acc"] for f in phases],
        "ibcl_paper_low_acc": [f["paper_low_acc"] for f in phases],
        "ibcl_uniform_pref_acc": [f["uniform_pref_acc"] for f in phases],
        "ibcl_onehot_acc": [{str(k): v for k, v in f["onehot"].items()} for f in phases],
        "ibcl_bwt_onehot": bwt,
        "ibcl_bwt_paper_per_phase": bwt_steps,
        "ibcl_pareto": pareto,
        # Cost: the chains train together, so each optimizer step updates n_chains models.
        "cost": {"ibcl": {"trained_models": n_chains * len(phases), "gradient_steps": int(ctx.phase_end_steps[-1]),
                          "models_trained_per_preference": 0}},
    }
    if ctx.rank == 0 and ctx.run_dir:
        from cltrain.learners.ibcl_plots import buffer_png, pareto_png

        buffer_png(out["ibcl_buffer_size"], Path(ctx.run_dir) / "ibcl_buffer.png", learner.method.d)
        if pareto:
            pareto_png(pareto, Path(ctx.run_dir) / "ibcl_pareto.png")
    return out
