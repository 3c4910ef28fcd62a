"""L2P: learning to prompt (Wang et al., CVPR 2022) on the frozen decision transformer, L2M's main baseline.

The same key pool as L2M (cltrain/learners/pool.py), but each entry is a few soft prompt tokens instead of a
weight modulator: the top-k entries' prompts are put in front of each sample's token sequence. Only the
selected prompts and keys learn; the backbone is frozen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from cltrain.config import bad, bounded, count, positive
from cltrain.learners.base import LEARNERS, Learner
from cltrain.learners.l2m import check_pool_learner
from cltrain.learners.pool import KeyPool, freeze, key_groups, pull_loss
from cltrain.nn.modulators import host_for


@dataclass
class L2PConfig:
    pool_size: int = count(100, high=100_000)
    top_k: int = count(5, high=100_000)
    prompt_length: int = count(1, high=4096)  # tokens per entry
    pull: float = bounded(0.5, 0, 1e6)
    key_lr: Optional[float] = positive(None, high=1e3)  # the keys' own learning rate; None: optim.lr

    def validate(self, where: str, exp: Any) -> None:
        if self.top_k > self.pool_size:
            raise bad(f"{where}top_k", self.top_k, f"<= {where}pool_size ({self.pool_size}): a sample picks top_k "
                      "different entries")
        check_pool_learner(exp, self, ("dt",), where)  # prompts are tokens: a transformer only


@LEARNERS.register("l2p")
class L2P(Learner):
    Config = L2PConfig
    single_network = False  # the prompts and the pool's keys live outside self.model
    own_logits = True  # the prompted network's logits, not the framework's

    def __init__(self, model: nn.Module, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        freeze(self.model)
        m = self.method
        width = model.state_emb.out_features
        self.prompts = nn.Parameter(torch.empty(m.pool_size, m.prompt_length, width).uniform_(-1.0, 1.0))
        self.pool = KeyPool(m.pool_size, width, top_k=m.top_k)
        self._sim: Optional[torch.Tensor] = None

    def logits(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        idx, self._sim = self.pool.select(host_for(self.model).query(self.model, x), None)
        prefix = self.prompts[idx].flatten(1, 2)  # [B, k * length, width]
        return self.model(x, prefix=prefix)

    def loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        return super().loss(logits, batch) + pull_loss(self._sim, self.method.pull)

    def optimizer_groups(self) -> Any:
        return key_groups(self, self.pool, self.method.key_lr)

    def on_task_start(self, task_id: int) -> None:
        self._optimizer = None  # as L2M: no momentum carried onto the last task's prompts
        self.pool.new_task()

    def final_metrics(self, ctx) -> dict[str, Any]:
        return {"pool_usage": self.pool.counts.tolist()}
