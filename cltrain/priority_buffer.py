"""A group-balanced buffer by random priority (TAME's selector and pruning buffers), vectorised over batches.

Every sample gets a priority in [0, 1); within each group the buffer keeps the samples of highest priority,
i.e. a uniform sample without replacement of everything that group has seen. Groups (e.g. (expert, class)
pairs, or a single group) share the capacity by water-filling: small groups keep everything, large groups
are capped at a common quota q, the largest q that fits. The quota can only fall as samples arrive, so an
evicted sample would never have been kept again: the contents are exactly "top-q of the group's stream".

Why classes and not a plugin: TAME decides what a sample is labelled with (the active expert) and when the
pruning buffer empties (on a new expert), which only the learner knows; any learner or plugin can hold one.

"Filled once per sample": batches carry no sample ids, so a sample's priority is a hash of its content (a
seeded random projection). The same image met again in a later epoch gets the same priority and is
recognised as a duplicate within its group instead of entering twice.
"""
from __future__ import annotations

from typing import Optional

import torch

from cltrain.buffers import rows_digest


def water_fill_quota(counts: torch.Tensor, capacity: int) -> torch.Tensor:
    """The largest q with sum(min(counts, q)) <= capacity (a 0-dim tensor; counts is 1-D, non-empty)."""
    n = counts.sort().values.to(torch.float64)
    g = n.numel()
    prefix = torch.cat([n.new_zeros(1), n.cumsum(0)[:-1]])  # sum of the i smallest counts, i = 0..g-1
    q = torch.floor((capacity - prefix) / torch.arange(g, 0, -1, device=n.device, dtype=torch.float64))
    below = torch.cat([n.new_zeros(1), n[:-1]])  # the i smallest groups must fit whole under q
    q = torch.where(q >= below, q, torch.full_like(q, -1))
    return torch.where(n.sum() <= capacity, n.max(), q.max()).long()


class PriorityBuffer:
    def __init__(self, capacity: int, seed: int = 0):
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.seed = seed
        self.x: Optional[torch.Tensor] = None
        self.y: Optional[torch.Tensor] = None
        self.tag: Optional[torch.Tensor] = None  # what the sample is labelled with (e.g. the active expert)
        self.group: Optional[torch.Tensor] = None  # -1: empty slot
        self.priority: Optional[torch.Tensor] = None
        self._projection: Optional[torch.Tensor] = None
        self.seen = 0  # rows offered (duplicates included)

    def __len__(self) -> int:
        return 0 if self.group is None else int((self.group >= 0).sum())

    def _allocate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dev = x.device
        self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=dev)
        self.y = torch.zeros(self.capacity, dtype=y.dtype, device=dev)
        self.tag = torch.zeros(self.capacity, dtype=torch.long, device=dev)
        self.group = torch.full((self.capacity,), -1, dtype=torch.long, device=dev)
        self.priority = torch.zeros(self.capacity, dtype=torch.float64, device=dev)

    def priorities(self, x: torch.Tensor) -> torch.Tensor:
        """Content hash -> [0, 1): the fractional part of a scaled random projection (uniform in practice)."""
        if self._projection is None or self._projection.device != x.device:
            gen = torch.Generator().manual_seed(self.seed)
            self._projection = torch.randn(x[0].numel(), generator=gen, dtype=torch.float64).to(x.device)
        h = x.reshape(len(x), -1).to(torch.float64) @ self._projection
        return torch.frac(h.abs() * 1024.0)

    def clear(self) -> None:
        if self.group is not None:
            self.group.fill_(-1)

    def add(self, x: torch.Tensor, y: torch.Tensor, group: torch.Tensor, tag: Optional[torch.Tensor] = None) -> None:
        if self.x is None:
            self._allocate(x, y)
        elif self.x.device != x.device:
            self.to(x.device)  # restored from a CPU checkpoint into a run on an accelerator
        self.seen += len(y)
        tag = tag if tag is not None else torch.zeros_like(y)
        held = torch.nonzero(self.group >= 0, as_tuple=True)[0]
        n_old = held.numel()
        g = torch.cat([self.group[held], group.to(self.group.device)])
        p = torch.cat([self.priority[held], self.priorities(x)])
        # Lexicographic (group asc, priority desc) by two stable sorts; on ties old rows stay first.
        order = torch.sort(p, descending=True, stable=True).indices
        order = order[torch.sort(g[order], stable=True).indices]
        gs, ps = g[order], p[order]
        dup = torch.zeros_like(gs, dtype=torch.bool)
        dup[1:] = (gs[1:] == gs[:-1]) & (ps[1:] == ps[:-1])  # the same sample met again in the same group
        order, gs = order[~dup], gs[~dup]
        # Rank within the group: position minus the position where the group starts.
        pos = torch.arange(gs.numel(), device=gs.device)
        start = torch.zeros_like(gs, dtype=torch.bool)
        start[0] = True
        start[1:] = gs[1:] != gs[:-1]
        rank = pos - torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
        counts = torch.unique_consecutive(gs, return_counts=True)[1]
        keep = order[rank < water_fill_quota(counts, self.capacity)]
        self._write(held, keep, n_old, x, y, g, p, tag)

    def _write(self, held, keep, n_old, x, y, g, p, tag) -> None:
        """Old rows not kept free their slots; kept new rows go into the free slots."""
        kept_old = torch.zeros(self.capacity, dtype=torch.bool, device=self.group.device)
        kept_old[held[keep[keep < n_old]]] = True
        new_rows = keep[keep >= n_old]
        free = torch.nonzero(~kept_old, as_tuple=True)[0]
        self.group[free] = -1
        slots = free[: new_rows.numel()]
        src = new_rows - n_old
        self.x[slots] = x[src.to(x.device)]
        self.y[slots] = y[src.to(y.device)]
        self.tag[slots] = tag[src.to(tag.device)]
        self.group[slots] = g[new_rows]
        self.priority[slots] = p[new_rows]

    def to(self, device) -> "PriorityBuffer":
        for name in ("x", "y", "tag", "group", "priority"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        self._projection = None
        return self

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, tag) of the held samples, in slot order."""
        if self.x is None:
            raise ValueError("the buffer is empty")
        held = torch.nonzero(self.group >= 0, as_tuple=True)[0]
        return self.x[held], self.y[held], self.tag[held]

    def digest(self) -> float:
        """A checksum of the held samples and their tags (to compare buffers across DDP ranks)."""
        return rows_digest(*self.contents()) if self.x is not None else 0.0

    def group_counts(self) -> dict[int, int]:
        g, c = torch.unique(self.group[self.group >= 0], return_counts=True)
        return dict(zip(g.tolist(), c.tolist()))

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "seed": self.seed, "seen": self.seen, "x": self.x, "y": self.y,
                "tag": self.tag, "group": self.group, "priority": self.priority}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.seed, self.seen = state["capacity"], state["seed"], state["seen"]
        self.x, self.y, self.tag = state["x"], state["y"], state["tag"]
        self.group, self.priority = state["group"], state["priority"]
        self._projection = None
