"""The key pool shared by L2M and L2P: keys, query matching, the usage penalty, the oracle split, the pull loss.

A pool has M keys (init U(-1, 1)). A sample's query (computed by the frozen model, no gradient) is matched by
cosine similarity; the top-k entries are its selection. While training a task after the first, scores become
(sim + 1) / 2 times a normalised inverse usage frequency of each entry, fixed at the task switch, so new tasks
claim unused entries; evaluation always uses plain cosine. Usage counts run over the whole sequence (never
reset) and are summed over DDP ranks every step, so every rank holds the same counts and weights. The oracle
variant restricts task t's selection to its own slice of the pool (entries t*E .. t*E + E - 1).
Keys learn only through the pull term, -pull * mean cos(query, selected key) (Schmied et al. 2023; Wang et
al. 2022 for L2P).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cltrain.distributed import all_sum

EPS = 1e-6


class KeyPool(nn.Module):
    def __init__(self, size: int, dim: int, top_k: int = 1, per_task: Optional[int] = None):
        super().__init__()
        self.keys = nn.Parameter(torch.empty(size, dim).uniform_(-1.0, 1.0))
        self.top_k = top_k
        self.per_task = per_task  # oracle: entries owned by each task id (None: one shared pool)
        # Buffers, so they travel in checkpoints (exact resume) and are identical on every rank.
        self.register_buffer("counts", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("weights", torch.ones(size))
        self.register_buffer("penalise", torch.zeros((), dtype=torch.bool))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def new_task(self) -> None:
        """At a task switch: penalise by the usage so far, if anything has been selected yet."""
        if self.counts.sum() == 0:
            return
        inverse = 1.0 / (self.counts / self.counts.sum() + EPS)
        self.weights.copy_((inverse / inverse.max()).float())
        self.penalise.fill_(True)

    def select(self, query: torch.Tensor, task_ids: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Entry ids [B, k] and their cosine similarities [B, k] (with gradient to the keys)."""
        sim = F.normalize(query, dim=-1) @ F.normalize(self.keys, dim=-1).T  # [B, M]
        with torch.no_grad():
            score = sim.detach()
            if self.training:  # torch.where, not `if penalise`: no host sync per step on a GPU
                score = torch.where(self.penalise, (score + 1) / 2 * self.weights, score)
            if self.per_task is not None and task_ids is not None:
                owner = torch.arange(self.size, device=sim.device) // self.per_task
                score = score.masked_fill(owner[None, :] != task_ids[:, None], float("-inf"))
            idx = score.topk(self.top_k, dim=1).indices
            if self.training:
                self.counts += all_sum(torch.bincount(idx.flatten(), minlength=self.size).double())
        return idx, sim.gather(1, idx)


def key_groups(learner: nn.Module, pool: KeyPool, key_lr: Optional[float]) -> Any:
    """The optimizer's parameter groups: the keys at their own learning rate when `key_lr` is set. Keys start
    U(-1, 1) and Adam moves a coordinate by about lr per step, so in a few hundred steps at the model's lr (CPU
    scale, where the paper trains 100k steps) a key stays near its random start and retrieval near chance."""
    if key_lr is None:
        return learner.parameters()
    rest = [p for p in learner.parameters() if p is not pool.keys]
    return [{"params": rest}, {"params": [pool.keys], "lr": key_lr}]


def pull_loss(sim: torch.Tensor, strength: float) -> torch.Tensor:
    """-strength * mean cosine between queries and their selected keys: draws each key towards its inputs."""
    return -strength * sim.mean()


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
