"""Running a module in train or eval mode for one block, then restoring the mode it had."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def in_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """`with in_mode(model, False):` evaluates (no dropout noise, frozen norms); the old mode comes back after,
    also when the block raises."""
    was = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was)
