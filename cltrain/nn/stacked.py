"""Modules of one structure stacked for a vmapped forward, kept current without re-stacking on every call.

TAME scores every expert on every training batch with one vmapped forward over the experts' stacked weights.
Stacking them anew each step copies every expert, although only one of them trains at a time; on an H200
that copy was about half of the scoring time at 20 experts (docs/benchmarks.md, the "pre-stacked" row).
`StackedModules` keeps the stacked copy and refreshes only the modules whose tensors changed since the last
call. It reads two things torch keeps on every tensor:

- the version counter, which every in-place write moves (optimizer steps, masks, `load_state_dict`): that
  module's slice is copied again;
- the storage pointer, which `.to()` and re-created tensors move: everything is stacked again.

Writes through `.data` move neither (that is what `.data` is for), so code that writes that way, such as the
DDP broadcasts in cltrain.distributed, must call `invalidate()` afterwards. The stacked values are the
modules' own values, so a forward on them gives the same numbers as one on a fresh stack.
"""
from __future__ import annotations

from itertools import chain
from typing import Optional, Sequence

import torch
from torch import nn
from torch.func import stack_module_state

Stamp = tuple[tuple[int, int], ...]  # (storage pointer, version) of every parameter and buffer, in order


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(chain(module.named_parameters(), module.named_buffers()))


def stamp(module: nn.Module) -> Stamp:
    return tuple((t.data_ptr(), t._version) for _, t in _tensors(module))


class StackedModules:
    """`stacked(modules)` -> (params, buffers) as `torch.func.stack_module_state` returns them, refreshed lazily."""

    def __init__(self) -> None:
        self._stacked: Optional[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = None
        self._stamps: list[Stamp] = []

    def invalidate(self) -> None:
        """Stack everything again on the next call (after writes the stamps cannot see)."""
        self._stacked = None

    @torch.no_grad()
    def __call__(self, modules: Sequence[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        stamps = [stamp(m) for m in modules]
        if self._stacked is None or not self._same_storage(stamps):
            self._stacked = stack_module_state(list(modules))
        else:
            for j, (new, old) in enumerate(zip(stamps, self._stamps)):
                if new != old:
                    self._copy_in(j, modules[j])
        self._stamps = stamps
        return self._stacked

    def _same_storage(self, stamps: list[Stamp]) -> bool:
        """Same modules, same tensors (only their values may have moved)."""
        if len(stamps) != len(self._stamps):
            return False
        return all(len(new) == len(old) and all(a[0] == b[0] for a, b in zip(new, old))
                   for new, old in zip(stamps, self._stamps))

    def _copy_in(self, j: int, module: nn.Module) -> None:
        params, buffers = self._stacked
        for name, tensor in _tensors(module):
            (params if name in params else buffers)[name][j].copy_(tensor)
