"""Weight modulators that wrap a frozen layer: LoRA and (IA)^3, as pools with one entry chosen per sample.

`Modulated` wraps a frozen module (a Linear, an activation) and, when a modulator is attached, lets it change
the module's output. A pool modulator holds M entries; `Selection.idx` ([B] entry ids, set by the method
before each forward) picks one per sample, and the chosen entries' weights are gathered and applied with
batched matmuls, so a batch mixing entries costs the same as one entry (no loop over samples).
Gathering also means only the selected entries receive gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from cltrain.registry import Registry


class Selection:
    """The pool entry of every sample in the current forward, shared by all modulators of one model."""

    def __init__(self) -> None:
        self.idx: Optional[torch.Tensor] = None  # [B] long


class Modulated(nn.Module):
    """A frozen module whose output an attached modulator may change: y = modulator(x, base(x))."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.modulator: Optional[nn.Module] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y if self.modulator is None else self.modulator(x, y)


class PoolLoRA(nn.Module):
    """y + scale * x A_e B_e for each sample's entry e (Hu et al. 2021): A Kaiming-uniform, B zero, so every
    entry starts as exactly no change."""

    def __init__(self, d_in: int, d_out: int, pool: int, rank: int, alpha: float, selection: Selection):
        super().__init__()
        self.A = nn.Parameter(torch.empty(pool, d_in, rank))
        self.B = nn.Parameter(torch.zeros(pool, rank, d_out))
        # Kaiming-uniform as nn.Linear(d_in, rank) initialises its weight (a = sqrt(5)): U(-1/sqrt(d_in), ...)
        bound = 1.0 / math.sqrt(d_in)
        nn.init.uniform_(self.A, -bound, bound)
        self.scale = alpha / rank
        self.selection = selection

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = self.selection.idx
        squeeze = x.dim() == 2
        xs = x.unsqueeze(1) if squeeze else x  # [B, T, d_in]
        delta = torch.bmm(torch.bmm(xs, self.A[idx]), self.B[idx]) * self.scale
        return y + (delta.squeeze(1) if squeeze else delta)


class PoolIA3(nn.Module):
    """y * l_e for each sample's entry e (Liu et al. 2022): scaling vectors initialised to ones (no change)."""

    def __init__(self, d_out: int, pool: int, selection: Selection):
        super().__init__()
        self.scales = nn.Parameter(torch.ones(pool, d_out))
        self.selection = selection

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.scales[self.selection.idx]  # [B, d_out]
        return y * (s.unsqueeze(1) if y.dim() == 3 else s)


@dataclass(frozen=True)
class PoolHost:
    """How a pool method plugs into one kind of frozen network (registered under its `model.name`).

    targets(model, kind) -> the Modulated layers that carry an entry's modulator for `kind` ("lora", "ia3"),
    each with the width its modulator needs (d_in, d_out); query(model, x) -> [B, D] frozen query features.
    """

    network: type  # the nn.Module class built by that model name
    targets: Callable[[nn.Module, str], list[tuple[Modulated, int, int]]]
    query: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    query_dim: Callable[[nn.Module], int]


POOL_HOSTS: Registry[PoolHost] = Registry("network a modulation pool can host", "model.name")


def host_for(model: nn.Module) -> PoolHost:
    """The registered host of a built network (by class: a learner sees the network, not its config name)."""
    for name in POOL_HOSTS:
        host = POOL_HOSTS.get(name)
        if isinstance(model, host.network):
            return host
    raise TypeError(f"{type(model).__name__} hosts no modulation pool; registered: {', '.join(POOL_HOSTS)}")
