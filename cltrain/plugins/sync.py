"""Keeping plugin state identical across DDP ranks (single-process runs pass straight through)."""
from __future__ import annotations

from typing import Optional

import torch


def rank_rows(n: int, trainer, device) -> torch.Tensor:
    """The rows of an n-row global batch that this rank trains on (rank::world, as the loader does)."""
    return torch.arange(trainer.global_rank, n, trainer.world_size, device=device)


def gather_rows(trainer, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor], n_global: int):
    """Rebuild the global batch of `n_global` rows from every rank's rows, in the loader's global order.

    Rank r holds rows r, r+W, r+2W, ... so its share is known without asking (no host sync per step);
    shards of a ragged last batch differ in size by one, so each pads to the largest before the all-gather
    and the padding is dropped after.
    """
    world = trainer.world_size
    if world == 1:
        return x, y, t
    strategy = trainer.strategy
    sizes = torch.tensor([len(range(r, n_global, world)) for r in range(world)], device=y.device)
    size = -(-n_global // world)
    tt = t if t is not None else torch.full_like(y, -1)
    pad = size - len(y)
    if pad:
        x, y, tt = (torch.cat([v, v[:1].expand(pad, *v.shape[1:])]) for v in (x, y, tt))
    gx, gy, gt = (strategy.all_gather(v) for v in (x, y, tt))  # [world, size, ...]
    keep = (torch.arange(size, device=y.device)[None, :] < sizes[:, None]).T.reshape(-1)
    order = lambda v: v.transpose(0, 1).reshape(world * size, *v.shape[2:])[keep]  # noqa: E731
    return order(gx), order(gy), (order(gt) if t is not None else None)
