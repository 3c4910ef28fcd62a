"""PCB-merging (Du et al., 2024, "Parameter Competition Balancing for Model Merging").

Per parameter and task, a balance score: intra-balancing exp(N * Norm(tau_i^2)) (how much the parameter
matters to its own task, sharpened by the number of tasks N) times inter-balancing sum_j exp(Norm(tau_i *
tau_j)) (how much the tasks agree on it), Norm a min-max normalisation over the parameters of one task. Scores
outside each task's top `density` fraction are dropped (zero); the merged vector is the score-weighted mean
sum_i s_i tau_i / sum_i s_i. (The paper's softmax normalisers are constant per task; we normalise the kept
scores by the weighted mean instead, as its Eq. for the merged vector does.)
"""
from dataclasses import dataclass

import torch

from cltrain.config import fraction
from cltrain.merging.base import MERGERS, Merger, Vector, keep_top, stack, unstack


@dataclass
class PcbConfig:
    density: float = fraction(0.2, low_open=True)  # fraction of each task's highest-scoring entries kept


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation along the last dimension (a constant row becomes zeros)."""
    low, high = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
    return (x - low) / (high - low).clamp(min=torch.finfo(x.dtype).tiny)


def balance_scores(rows: torch.Tensor) -> torch.Tensor:
    """[n_tasks, n_params] task vectors -> [n_tasks, n_params] intra * inter balance scores."""
    n = rows.shape[0]
    intra = torch.exp(n * minmax(rows * rows))
    inter = torch.exp(minmax(rows.unsqueeze(1) * rows.unsqueeze(0))).sum(1)  # [i, j, p] summed over j
    return intra * inter


@MERGERS.register("pcb")
class Pcb(Merger):
    Config = PcbConfig

    def merge(self, vectors: list[Vector]) -> Vector:
        rows, layout = stack(vectors)
        scores = balance_scores(rows)
        scores = scores * keep_top(scores, self.cfg.density)
        merged = (scores * rows).sum(0) / scores.sum(0).clamp(min=torch.finfo(rows.dtype).tiny)
        return unstack(merged, layout)
