"""Sample buffers shared by plugins: a reservoir (Vitter's algorithm R) vectorised over whole batches."""
from __future__ import annotations

from typing import Optional

import torch


class ReservoirBuffer:
    """Keeps a uniform random sample of everything added, `capacity` rows at most.

    Adding a batch is a few tensor ops: row i of the stream (global position p) goes to slot p while the
    buffer fills, afterwards to a slot drawn uniformly from [0, p] if that slot is < capacity. When several
    rows of one batch pick the same slot the later row wins, exactly as one-at-a-time insertion would.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.x: Optional[torch.Tensor] = None
        self.y: Optional[torch.Tensor] = None
        self.t: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def _allocate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
        self.y = torch.empty((self.capacity, *y.shape[1:]), dtype=y.dtype, device=y.device)
        self.t = torch.full((self.capacity,), -1, dtype=torch.long, device=x.device)

    def slots_for(self, n: int) -> torch.Tensor:
        """Target slot of each of the next n rows (-1: not kept), advancing the stream position."""
        pos = torch.arange(self.seen, self.seen + n)
        draw = (torch.rand(n, generator=self.generator, dtype=torch.float64) * (pos + 1)).long()
        slots = torch.where(pos < self.capacity, pos, torch.where(draw < self.capacity, draw, -1))
        self.seen += n
        return slots

    def add(self, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor] = None) -> None:
        if self.x is None:
            self._allocate(x, y)
        slots = self.slots_for(len(y))
        kept = torch.nonzero(slots >= 0, as_tuple=True)[0]
        if kept.numel() == 0:
            return
        # Last writer wins per slot: the largest row index aimed at each slot.
        winner = torch.full((self.capacity,), -1, dtype=torch.long)
        winner.scatter_reduce_(0, slots[kept], kept, reduce="amax")
        target = torch.nonzero(winner >= 0, as_tuple=True)[0]
        rows = winner[target].to(x.device)
        target = target.to(x.device)
        # index_copy_/index_select: the same writes as self.x[target] = x[rows] (target holds each slot once),
        # without advanced indexing's element-by-element path on the CPU.
        self.x.index_copy_(0, target, x.index_select(0, rows).to(self.x.dtype))
        self.y.index_copy_(0, target, y.index_select(0, rows).to(self.y.dtype))
        if t is not None:
            self.t.index_copy_(0, target, t.index_select(0, rows).to(self.t.dtype))
        else:
            self.t.index_fill_(0, target, -1)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n rows drawn uniformly with replacement from what the buffer holds."""
        picks = torch.randint(len(self), (n,), generator=self.generator).to(self.y.device)
        return self.x.index_select(0, picks), self.y.index_select(0, picks), self.t.index_select(0, picks)

    def digest(self) -> float:
        """A checksum of the contents (order-sensitive), to compare buffers across processes cheaply."""
        if self.x is None:
            return 0.0
        n = len(self)
        return rows_digest(self.x[:n], self.y[:n], self.t[:n])

    def to(self, device: torch.device) -> "ReservoirBuffer":
        """Move the contents (a checkpoint restores them on the CPU) to the training device."""
        if self.x is not None:
            self.x, self.y, self.t = self.x.to(device), self.y.to(device), self.t.to(device)
        return self

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "seen": self.seen, "generator": self.generator.get_state(),
                "x": self.x, "y": self.y, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.seen = state["capacity"], state["seen"]
        self.generator.set_state(state["generator"])
        self.x, self.y, self.t = state["x"], state["y"], state["t"]


def rows_digest(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> float:
    """An order-sensitive checksum of (x, y, t) rows: equal contents give equal numbers on every process."""
    n = len(y)
    weights = torch.arange(1, n + 1, dtype=torch.float64, device=y.device)
    rows = x.reshape(n, -1).double().sum(1) + y.double() * 1e3 + t.double()
    return float((rows * weights).sum())
