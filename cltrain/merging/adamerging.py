"""AdaMerging (Yang et al., ICLR 2024): merging coefficients learned by entropy minimisation on unlabelled data.

The merged weights are base + sum_i c_i tau_i (task-wise: one c_i per task vector) or base + sum_i c_{i,l}
tau_{i,l} (layer-wise: one per task vector and tensor). The coefficients start at `coef_init` (the paper's
0.3) and are trained with Adam (`coef_lr`, `coef_steps`) to minimise the mean Shannon entropy of the merged
model's predictions on unlabelled inputs of every task. The paper uses the unlabelled *test* inputs; here
they are the `val_per_task` training samples per task that the caller holds (the merge learner's validation
samples, or `cltrain merge`'s), their labels never read. The merged vector carries the learned scale
(learns_scale: applied with lam = 1).
"""
from dataclasses import dataclass

import torch

from cltrain.config import choice, count, fraction, positive
from cltrain.merging.base import MERGERS, MergeData, Merger, Vector


@dataclass
class AdaMergingConfig:
    granularity: str = choice("layer", "layer", "task")  # one coefficient per (task, tensor) or per task
    coef_init: float = fraction(0.3)  # the coefficients' starting value (the paper's 0.3)
    coef_steps: int = count(100, high=100_000)  # Adam steps on the entropy (the paper: 500)
    coef_lr: float = positive(0.001, high=10)  # Adam's step size (the paper: 1e-3)


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    # Task-incremental masks set other tasks' logits to -inf: 0 * -inf would be NaN, so they become a finite
    # floor whose probability is still exactly 0.
    logp = torch.log_softmax(torch.nan_to_num(logits, neginf=-1e4), dim=1)
    return -(logp.exp() * logp).sum(1).mean()


@MERGERS.register("adamerging")
class AdaMerging(Merger):
    Config = AdaMergingConfig
    learns_scale = True

    def coefficients(self, n_tasks: int, names: list[str]) -> torch.Tensor:
        columns = len(names) if self.cfg.granularity == "layer" else 1
        return torch.full((n_tasks, columns), self.cfg.coef_init)

    def weights(self, coef: torch.Tensor, vectors: list[Vector], base: Vector) -> Vector:
        """base + the coefficient-weighted sum of the task vectors, tensor by tensor (differentiable in coef)."""
        out = dict(base)
        for l, name in enumerate(vectors[0]):
            c = coef[:, min(l, coef.shape[1] - 1)]
            out[name] = base[name] + sum(c[i] * v[name] for i, v in enumerate(vectors))
        return out

    def combine(self, vectors: list[Vector], data: MergeData) -> Vector:
        names = list(vectors[0])
        coef = self.coefficients(len(vectors), names).to(vectors[0][names[0]].device).requires_grad_(True)
        opt = torch.optim.Adam([coef], lr=self.cfg.coef_lr)
        with torch.enable_grad():
            for _ in range(self.cfg.coef_steps):
                w = self.weights(coef, vectors, data.base)
                loss = torch.stack([mean_entropy(data.logits(w, x, t)) for x, t in data.unlabelled]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.learned = coef.detach()
        with torch.no_grad():
            merged = self.weights(self.learned, vectors, {k: torch.zeros_like(v) for k, v in vectors[0].items()})
        return merged

    def merge(self, vectors: list[Vector]) -> Vector:
        raise TypeError("AdaMerging learns its coefficients from data: call combine(vectors, MergeData)")
