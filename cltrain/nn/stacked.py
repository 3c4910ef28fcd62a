"""Modules of one structure stacked for a vmapped forward, kept current without re-stacking on every call.

TAME scores every expert on every training batch with one vmapped forward over the experts' stacked weights.
Stacking them anew each step copies every expert, although only one of them trains at a time; on an H200
that copy was about half of the scoring time at 20 experts (docs/benchmarks.md, the "pre-stacked" row).
`StackedModules` keeps the stacked copy and refreshes only the modules whose tensors changed since the last
call. It reads two things torch keeps on every tensor:

- the version counter, which every in-place write moves (optimizer steps, masks, `load_state_dict`): that
  module's slice is copied again;
- the storage pointer, which `.to()` moves: everything is stacked again.

Everything else stacks again too: another list of modules, or `invalidate()`. Writes through `.data` move no
version counter (that is what `.data` is for), and a module given a new Parameter object is not seen either,
so code that does either (the DDP broadcasts in cltrain.distributed write through `.data`) must call
`invalidate()` afterwards. The stacked values are the modules' own values, so a forward on them gives the
same numbers as one on a fresh stack.
"""
from __future__ import annotations

from itertools import chain
from typing import Sequence

import torch
from torch import nn
from torch.func import stack_module_state

Stacked = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def _stamp(tensors: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [(t.data_ptr(), t._version) for t in tensors]


class StackedModules:
    """`stacked(modules)` -> (params, buffers) as `torch.func.stack_module_state` returns them, refreshed lazily.

    The tensors of each module are listed once per stacking (walking `named_parameters()` on every call
    cost as much as the copy it saves); each call then only reads their pointers and version counters.
    """

    def __init__(self) -> None:
        self._stacked: Stacked | None = None
        self._modules: list[nn.Module] = []
        self._tensors: list[list[torch.Tensor]] = []  # per module: its parameters, then its buffers
        self._slices: list[list[torch.Tensor]] = []  # per module: its views into the stacked tensors, same order
        self._stamps: list[list[tuple[int, int]]] = []

    def invalidate(self) -> None:
        """Stack everything again on the next call (after writes the stamps cannot see)."""
        self._stacked = None

    @torch.no_grad()
    def __call__(self, modules: Sequence[nn.Module]) -> Stacked:
        if self._stacked is None or len(modules) != len(self._modules) \
                or any(a is not b for a, b in zip(modules, self._modules)):
            return self._stack(list(modules))
        for j, tensors in enumerate(self._tensors):
            stamp = _stamp(tensors)
            if stamp == self._stamps[j]:
                continue
            if any(new[0] != old[0] for new, old in zip(stamp, self._stamps[j])):
                return self._stack(list(modules))  # new storage (moved device or dtype): stack afresh
            for target, tensor in zip(self._slices[j], tensors):
                target.copy_(tensor)
            self._stamps[j] = stamp
        return self._stacked

    def _stack(self, modules: list[nn.Module]) -> Stacked:
        self._stacked = params, buffers = stack_module_state(modules)
        named = [list(chain(m.named_parameters(), m.named_buffers())) for m in modules]
        self._modules = modules
        self._tensors = [[t for _, t in pairs] for pairs in named]
        self._slices = [[(params if name in params else buffers)[name][j] for name, _ in pairs]
                        for j, pairs in enumerate(named)]
        self._stamps = [_stamp(tensors) for tensors in self._tensors]
        return self._stacked
