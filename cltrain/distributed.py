"""Keeping state identical across DDP ranks (single-process runs pass straight through).

Plugins and learners that hold state outside the gradient sync (buffers, detectors, expert pools) keep it
identical either by feeding every rank the same inputs (`gather_rows`, `all_sum`) or by copying rank 0's
result (`broadcast_module`, `from_rank0`).

Every collective cltrain issues goes through this module (`_all_reduce_`, `_broadcast`, `_all_gather`,
`barrier`), which hands torch.distributed tensors on the process group's device (`group_device`: the current
CUDA device under NCCL, the CPU under gloo) and gives results back on the caller's device. A tensor made on
the wrong device therefore costs a copy, never a crash on NCCL. With CLTRAIN_CHECK_COLLECTIVES=1 (the DDP
tests set it) `collective_check` makes every torch.distributed collective of a fit assert that cltrain called
it from here and that its tensors were already on the group's device, so a stray one fails the tests.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

CHECK_ENV = "CLTRAIN_CHECK_COLLECTIVES"


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
    sizes = torch.tensor([len(range(r, n_global, world)) for r in range(world)], device=y.device)
    size = -(-n_global // world)
    tt = t if t is not None else torch.full_like(y, -1)
    pad = size - len(y)
    if pad:
        x, y, tt = (torch.cat([v, v[:1].expand(pad, *v.shape[1:])]) for v in (x, y, tt))
    gx, gy, gt = (_all_gather(v) for v in (x, y, tt))  # [world, size, ...]
    keep = (torch.arange(size, device=y.device)[None, :] < sizes[:, None]).T.reshape(-1)
    order = lambda v: v.transpose(0, 1).reshape(world * size, *v.shape[2:])[keep]  # noqa: E731
    return order(gx), order(gy), (order(gt) if t is not None else None)


def world_size() -> int:
    """Processes in the run (1 unless torch.distributed was initialised, by Lightning's DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def group_device() -> torch.device:
    """The device the process group communicates on: NCCL takes CUDA tensors only, gloo/mpi CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- the only calls into torch.distributed's collectives -------------------------------------------------
def _on_group(v: torch.Tensor) -> torch.Tensor:
    device = group_device()
    return v if v.device == device else v.to(device)


def _all_reduce_(v: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """All-reduce v in place (through a copy on the group's device if v lives elsewhere); returns v."""
    out = _on_group(v)
    dist.all_reduce(out, op=op)
    if out is not v:
        v.copy_(out)
    return v


def _broadcast(v: torch.Tensor, src: int = 0) -> None:
    """Overwrite v in place with rank src's v."""
    out = _on_group(v)
    dist.broadcast(out, src=src)
    if out is not v:
        v.copy_(out)


def _all_gather(v: torch.Tensor) -> torch.Tensor:
    """[world, *v.shape]: every rank's v (same shape on every rank), on v's device."""
    mine = _on_group(v.contiguous())
    everyone = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(everyone, mine)
    return torch.stack(everyone).to(v.device)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_sum(v: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `v` over all ranks (the same result on every rank, on v's device)."""
    return v if world_size() == 1 else _all_reduce_(v.clone(), dist.ReduceOp.SUM)


def all_max(v: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of `v` over all ranks."""
    return v if world_size() == 1 else _all_reduce_(v.clone(), dist.ReduceOp.MAX)


def from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's value of a float every rank computed, so decisions taken on it agree bit for bit."""
    if world_size() == 1:
        return value
    v = torch.tensor([value], dtype=torch.float64, device=device)
    _broadcast(v)
    return float(v)


def module_digest(module: nn.Module) -> float:
    """A checksum of a module's parameters (position-weighted, so swapped tensors change it)."""
    return float(sum((p.detach().double() * (i + 1)).sum() for i, p in enumerate(module.parameters())))


def ranks_agree(values: list[float], device: torch.device, rtol: float = 0.0) -> bool:
    """Do all ranks hold the same values (checksums, counts)? One all-gather; True in a single process."""
    if world_size() == 1:
        return True
    mine = torch.tensor(values, dtype=torch.float64, device=device)
    return all(torch.allclose(other, mine, rtol=rtol, atol=0.0) for other in _all_gather(mine))


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
    _broadcast(flat)
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
    _unflat(_all_reduce_(flat), grads)


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


# ---- placing restored state ------------------------------------------------------------------------------
def to_device(tree: Any, device: torch.device) -> Any:
    """The same nested dicts / lists / tuples with every tensor on `device` (checkpoints load on the CPU)."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device) for v in tree)
    return tree


# ---- the test hook: every collective of a fit from this module, on the group's device ------------------
_COLLECTIVES = ("barrier", "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor",
                "gather", "scatter", "reduce", "all_to_all_single")
_HERE = Path(__file__).resolve()
# code that only relays a collective someone else asked for (Lightning's strategy.reduce, torch's wrappers)
_RELAYS = ("/torch/distributed/", "/pytorch_lightning/strategies/", "/lightning_fabric/utilities/distributed",
           "/lightning_fabric/strategies/")
_PACKAGE = _HERE.parent


class CollectiveCheckError(AssertionError):
    """A collective was issued from outside cltrain.distributed, or with a tensor off the group's device."""


def _initiator() -> Optional[Path]:
    """The file that started the current collective: the caller of the chain of torch.distributed and
    Lightning-strategy frames that leads to it (None when Lightning's own loops started it)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if not any(part in path for part in _RELAYS):
            resolved = Path(path).resolve()
            return resolved if _PACKAGE in resolved.parents else None
        frame = frame.f_back
    return None


def _checked(name: str, original: Callable) -> Callable:
    def collective(*args, **kwargs):
        origin = _initiator()
        if origin is not None and origin != _HERE:
            raise CollectiveCheckError(f"torch.distributed.{name} called from {origin.name}: cltrain's collectives "
                                       "go through cltrain/distributed.py, which places their tensors")
        expected = group_device()
        tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
        tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        wrong = [t.device for t in tensors if t.device != expected]
        if wrong:
            raise CollectiveCheckError(f"torch.distributed.{name} got tensors on {wrong}; the process group "
                                       f"({dist.get_backend()}) communicates on {expected}")
        return original(*args, **kwargs)
    return collective


@contextmanager
def collective_check() -> Iterator[None]:
    """With CLTRAIN_CHECK_COLLECTIVES=1: every torch.distributed collective in the block is checked (above)."""
    if os.environ.get(CHECK_ENV) != "1":
        yield
        return
    originals = {name: getattr(dist, name) for name in _COLLECTIVES if hasattr(dist, name)}
    for name, fn in originals.items():
        setattr(dist, name, _checked(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
