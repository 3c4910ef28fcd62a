"""Keeping state identical across DDP ranks (single-process runs pass straight through).

Plugins and learners that hold state outside the gradient sync (buffers, detectors, expert pools) keep it
identical either by feeding every rank the same inputs (`gather_rows`, `all_sum`) or by copying rank 0's
result (`broadcast_module`, `from_rank0`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn


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


def world_size() -> int:
    """Processes in the run (1 unless torch.distributed was initialised, by Lightning's DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_sum(v: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `v` over all ranks (the same result on every rank)."""
    if world_size() == 1:
        return v
    v = v.clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return v


def from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's value of a float every rank computed, so decisions taken on it agree bit for bit."""
    if world_size() == 1:
        return value
    v = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(v, src=0)
    return float(v)


def module_digest(module: nn.Module) -> float:
    """A checksum of a module's parameters (position-weighted, so swapped tensors change it)."""
    return float(sum((p.detach().double() * (i + 1)).sum() for i, p in enumerate(module.parameters())))


def ranks_agree(values: list[float], device: torch.device, rtol: float = 0.0) -> bool:
    """Do all ranks hold the same values (checksums, counts)? One all-gather; True in a single process."""
    if world_size() == 1:
        return True
    mine = torch.tensor(values, dtype=torch.float64, device=device)
    everyone = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(everyone, mine)
    return all(torch.allclose(other, mine, rtol=rtol, atol=0.0) for other in everyone)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    # float64 holds float32/16 values and integer buffers (< 2**53) exactly: one message for mixed dtypes
    return torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])


def _unflat(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_module(module: nn.Module) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's (one broadcast)."""
    if world_size() == 1:
        return
    tensors = [t.data for t in [*module.parameters(), *module.buffers()]]
    flat = _flat(tensors)
    dist.broadcast(flat, src=0)
    _unflat(flat, tensors)


def average_gradients(params: list[nn.Parameter], weight: float) -> None:
    """Make every rank's gradients the global-batch gradient: the sum over ranks of weight * local gradient.

    `weight` is this rank's share of the global batch's rows: local mean-loss gradients weighted by their
    row counts sum to the gradient of the global mean loss, also for a ragged last batch. One all-reduce.
    """
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight  # gradients share one dtype: no casts
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    _unflat(flat, grads)


# trainer.strategy values under which a self-syncing learner runs (as SelfSyncDDPStrategy) with several processes
SELF_SYNC_STRATEGIES = ("auto", "ddp")


class SelfSyncDDPStrategy(DDPStrategy):
    """Lightning's DDP processes and collectives without the DistributedDataParallel wrapper.

    For learners whose module set changes during training (TAME spawns experts): DDP registers the
    parameters once, when it wraps the module, and expects each of them to get a gradient every step. Such a
    learner averages its gradients itself (`average_gradients`) and keeps everything else identical with the
    helpers above; here the module only starts from rank 0's weights, as DDP's wrapper would make it.
    """

    def configure_ddp(self) -> None:
        broadcast_module(self.model)
