"""DARE (Yu et al., 2024, "Language models are Super Mario"): drop and rescale, then task arithmetic.

Each entry of each task vector is kept with probability `density` and divided by it, so every entry's
expectation is unchanged; the rescaled vectors are summed. Masks come from the run's seed
(cltrain.seeding: purpose "dare_mask", index = the vector's position).
"""
from dataclasses import dataclass

import torch

from cltrain.config import fraction
from cltrain.merging.base import MERGERS, Merger, Vector, stack, unstack
from cltrain.seeding import generator


@dataclass
class DareConfig:
    density: float = fraction(0.2, low_open=True)  # keep probability (1 - the paper's drop rate p)


@MERGERS.register("dare")
class Dare(Merger):
    Config = DareConfig

    def drop_rescale(self, rows: torch.Tensor) -> torch.Tensor:
        """Each row masked with its own seeded Bernoulli(density) draw and divided by density."""
        keep = torch.stack([torch.rand(row.shape, generator=generator(self.seed, "dare_mask", i)) < self.cfg.density
                            for i, row in enumerate(rows)]).to(rows.device)
        return rows * keep / self.cfg.density

    def merge(self, vectors: list[Vector]) -> Vector:
        rows, layout = stack(vectors)
        return unstack(self.drop_rescale(rows).sum(0), layout)
