"""Keeping plugin state identical across DDP ranks (single-process runs pass straight through)."""
from __future__ import annotations

from typing import Optional

import torch


def rank_rows(n: int, trainer, device) -> torch.Tensor:
    """The rows of an n-row global batch that this rank trains on (rank::world, as the loader does)."""
    return torch.arange(trainer.global_rank, n, trainer.world_size, device=device)


def gather_rows(trainer, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor]):
    """Rebuild the global batch from every rank's rows, in the loader's global order.

    Ranks hold rows r, r+W, r+2W, ... of the global batch; shards of a ragged last batch differ in size by
    one at most, so each rank pads to the largest size before the all-gather and the padding is dropped after.
    """
    world = trainer.world_size
    if world == 1:
        return x, y, t
    strategy = trainer.strategy
    sizes = strategy.all_gather(torch.tensor([len(y)], device=y.device)).view(-1)
    size = int(sizes.max())
    tt = t if t is not None else torch.full_like(y, -1)
    pad = size - len(y)
    if pad:
        x, y, tt = (torch.cat([v, v[:1].expand(pad, *v.shape[1:])]) for v in (x, y, tt))
    gx, gy, gt = (strategy.all_gather(v) for v in (x, y, tt))  # [world, size, ...]
    keep = (torch.arange(size, device=y.device)[None, :] < sizes[:, None].to(y.device)).T.reshape(-1)
    order = lambda v: v.transpose(0, 1).reshape(world * size, *v.shape[2:])[keep]  # noqa: E731
    return order(gx), order(gy), (order(gt) if t is not None else None)
