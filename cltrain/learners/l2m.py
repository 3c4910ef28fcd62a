"""L2M: learning to modulate a frozen pre-trained model (Schmied et al., NeurIPS 2023, arXiv 2306.14884).

The pre-trained decision transformer is frozen. A pool of entries, each a key and a modulator in every block
(LoRA on the attention query and value outputs and on the MLP's first layer; or (IA)^3 on keys, values and
the MLP activation), is matched per sample against a query: the mean of the frozen state embeddings over the
context. The selected entry (top-1) modulates that sample; the batch is computed in one pass with every
sample's entry gathered (cltrain/nn/modulators.py). Only selected entries and keys learn; new tasks are pushed
to unused entries by the usage penalty (cltrain/learners/pool.py). `pool_size=1` is the single-LoRA baseline;
`oracle=true` gives each task id its own slice of the pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from cltrain.config import bad, bounded, choice, count, positive
from cltrain.distributed import all_sum
from cltrain.learners.base import LEARNERS, Learner
from cltrain.learners.pool import KeyPool, freeze, key_groups, pull_loss
from cltrain.nn.modes import in_mode
from cltrain.streams.loader import eval_batches
from cltrain.nn.modulators import PoolIA3, PoolLoRA, Selection, host_for


@dataclass
class L2MConfig:
    pool_size: int = count(30, high=100_000)
    rank: int = count(8, high=4096)  # LoRA rank
    alpha: float = positive(16.0, high=1e6)  # LoRA scale alpha / rank = 2
    modulator: str = choice("lora", "lora", "ia3")
    pull: float = bounded(0.5, 0, 1e6)  # strength of the key pull term
    key_lr: Optional[float] = positive(None, high=1e3)  # the keys' own learning rate; None: optim.lr
    oracle: bool = False  # task t selects only among its own entries t*E .. t*E+E-1 (needs task ids)
    oracle_entries: int = count(3, high=100_000)  # E: entries per task in the oracle split (30 / CW10)

    def validate(self, where: str, exp: Any) -> None:
        check_pool_learner(exp, self, POOL_HOST_MODELS, where)


# The networks that host a pool (cltrain/nn/modulators.py's POOL_HOSTS registry), as a literal so the config
# checks run without importing torch; tests/test_l2m.py checks it against the registry.
POOL_HOST_MODELS = ("dt", "mlp")


def check_pool_learner(exp: Any, method: Any, hosts: tuple[str, ...], where: str) -> None:
    """Pool methods need a network that hosts the pool, a task-aware stream for the oracle, and no weight decay
    (decay would move unselected entries, whose gradient is zero but not None)."""
    name = exp.learner.get("name")
    if exp.model.name not in hosts:
        raise bad("model.name", exp.model.name, f"{', '.join(hosts)} (a network that hosts {name}'s pool)")
    if exp.optim.weight_decay != 0:
        raise bad("optim.weight_decay", exp.optim.weight_decay,
                  f"0 with learner.name={name!r} (decay would change pool entries that were not selected)")
    if getattr(method, "oracle", False):
        if exp.stream.presentation != "task_aware":
            raise bad("stream.presentation", exp.stream.presentation, "task_aware with learner.oracle=true (task ids)")
        need = exp.stream.n_tasks * method.oracle_entries
        if method.pool_size < need:
            raise bad(f"{where}pool_size", method.pool_size,
                      f"pool_size >= {need} (learner.oracle=true gives each of stream.n_tasks={exp.stream.n_tasks} "
                      f"tasks learner.oracle_entries={method.oracle_entries} entries)")


@LEARNERS.register("l2m")
class L2M(Learner):
    Config = L2MConfig
    single_network = False  # the pool's keys live outside self.model: its weights alone are not the learner
    own_logits = True  # the modulated network's logits, not the framework's

    def __init__(self, model: nn.Module, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        freeze(self.model)
        m = self.method
        self.selection = Selection()
        self.host = host_for(model)
        for layer, d_in, d_out in self.host.targets(model, m.modulator):
            layer.modulator = (PoolLoRA(d_in, d_out, m.pool_size, m.rank, m.alpha, self.selection)
                               if m.modulator == "lora" else PoolIA3(d_out, m.pool_size, self.selection))
        width = self.host.query_dim(model)
        self.pool = KeyPool(m.pool_size, width, top_k=1, per_task=m.oracle_entries if m.oracle else None)
        self._sim: Optional[torch.Tensor] = None
        # Which entries each task claimed while it trained (retrieval accuracy); counts when its phase began.
        self.task_entries: dict[int, list[int]] = {}
        self.register_buffer("start_counts", torch.zeros(m.pool_size, dtype=torch.float64))

    def select(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        """Each sample's entry (top-1); keeps the similarities for the pull term of this step's loss."""
        idx, self._sim = self.pool.select(self.host.query(self.model, x), t)
        return idx[:, 0]

    def logits(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        self.selection.idx = self.select(x, t)
        return self.model(x)

    def loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        return super().loss(logits, batch) + pull_loss(self._sim, self.method.pull)

    def optimizer_groups(self) -> Any:
        return key_groups(self, self.pool, self.method.key_lr)

    def on_task_start(self, task_id: int) -> None:
        # A fresh optimizer per task: Adam's momentum would otherwise keep moving the last task's entries.
        self._optimizer = None
        self.pool.new_task()
        self.start_counts.copy_(self.pool.counts)

    def on_task_end(self, task_id: int, samples) -> None:
        """Remember the entries this task used for at least 5 % of its selections (its 'own' entries)."""
        used = self.pool.counts - self.start_counts
        self.task_entries[task_id] = torch.nonzero(used >= 0.05 * used.sum()).flatten().tolist()

    def get_extra_state(self) -> Any:
        return {"task_entries": self.task_entries}

    def set_extra_state(self, state: Any) -> None:
        self.task_entries = {int(k): v for k, v in state["task_entries"].items()}

    @torch.no_grad()
    def retrieval_accuracy(self, ctx) -> list[float]:
        """Per task: the share of its test inputs whose query picks one of the task's own entries, without a
        task id (image streams: their test sets; under DDP each rank scores a share)."""
        counts = torch.zeros(len(ctx.stream.tasks), 2, dtype=torch.float64, device=self.device)
        with in_mode(self, False):
            for task_id, entries in self.task_entries.items():
                own = torch.tensor(entries, device=self.device)
                for x, _ in eval_batches(ctx.stream, task_id, ctx.eval_batch_size, ctx.rank, ctx.world_size):
                    counts[task_id, 0] += torch.isin(self.select(x, None), own).sum()
                    counts[task_id, 1] += x.shape[0]
        counts = all_sum(counts)
        return (counts[:, 0] / counts[:, 1].clamp(min=1)).tolist()

    def final_metrics(self, ctx) -> dict[str, Any]:
        out: dict[str, Any] = {"pool_usage": self.pool.counts.tolist(), "task_entries": self.task_entries}
        if ctx.stream.evaluator == "accuracy" and self.task_entries:
            acc = self.retrieval_accuracy(ctx)
            out.update(retrieval_acc=acc, retrieval_acc_mean=sum(acc[t] for t in self.task_entries) / len(self.task_entries))
        return out
