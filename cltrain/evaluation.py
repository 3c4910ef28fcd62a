"""Per-phase evaluators: how the trainer scores every task after each phase (one row of the accuracy matrix).

A stream names its evaluator (`Stream.evaluator`): classification streams use test accuracy, robot streams
success rates from rollouts. Either way the row is a list of floats in [0, 1], one per task, the same on every
DDP rank (each rank scores a share; the counts are summed), so ACC/BWT/forgetting, plots and resume see no
difference.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from cltrain.distributed import all_sum
from cltrain.nn.modes import in_mode
from cltrain.registry import Registry

if TYPE_CHECKING:
    from cltrain.learners.base import Learner
    from cltrain.streams.base import Stream

# name -> (stream, learner, eval batch size, rank, world size, seed, split) -> score per task; split is "test",
# or "val" for streams with a validation split (stream.val_fraction)
Evaluator = Callable[["Stream", "Learner", int, int, int, int, str], list[float]]
EVALUATORS: Registry[Evaluator] = Registry("evaluator", "stream evaluator")


@EVALUATORS.register("accuracy")
@torch.no_grad()
def test_accuracy(stream: "Stream", learner: "Learner", batch_size: int, rank: int, world: int, seed: int,
                  split: str = "test") -> list[float]:
    """Test (or validation) accuracy on every task, future ones too. Under DDP each rank scores a share; counts
    are summed."""
    # Imported here: cltrain.streams registers every stream family on import, and the metaworld family imports
    # this module for EVALUATORS (a module-level import was a cycle whenever cltrain.evaluation came first).
    from cltrain.streams.loader import eval_batches

    counts = torch.zeros(len(stream.tasks), 2, dtype=torch.float64, device=learner.device)
    with in_mode(learner, False):
        for task in stream.tasks:
            for x, y in eval_batches(stream, task.id, batch_size, rank, world, split):
                t = torch.full_like(y, task.id) if stream.task_aware else None
                counts[task.id, 0] += (learner.predict(x, t) == y).sum()
                counts[task.id, 1] += y.numel()
    counts = all_sum(counts)
    return (counts[:, 0] / counts[:, 1].clamp(min=1)).tolist()
