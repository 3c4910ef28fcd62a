"""TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint merge.

1. Trim: keep each task vector's `density` fraction of largest-magnitude entries, zero the rest.
2. Elect: per parameter, the sign of the summed trimmed values (the sign with more total mass).
3. Disjoint merge: per parameter, the mean over the tasks whose trimmed value has the elected sign.
"""
from dataclasses import dataclass

import torch

from cltrain.config import fraction
from cltrain.merging.base import MERGERS, Merger, Vector, keep_top, stack, unstack


@dataclass
class TiesConfig:
    density: float = fraction(0.2, low_open=True)  # fraction of each task vector's entries kept by the trim


@MERGERS.register("ties")
class Ties(Merger):
    Config = TiesConfig

    def merge(self, vectors: list[Vector]) -> Vector:
        rows, layout = stack(vectors)
        trimmed = rows * keep_top(rows.abs(), self.cfg.density)
        sign = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        total = (trimmed * agree).sum(0)
        return unstack(total / agree.sum(0).clamp(min=1), layout)
