"""Model Breadcrumbs (Davari & Belilovsky, 2024): per layer, drop both tails of each task vector's magnitudes
(the smallest `drop_low` fraction, noise, and the largest `drop_high` fraction, outliers), then sum."""
from dataclasses import dataclass

import torch

from cltrain.config import bad, fraction
from cltrain.merging.base import MERGERS, Merger, Vector


@dataclass
class BreadcrumbsConfig:
    drop_low: float = fraction(0.85, high_open=True)  # the paper's beta: smallest magnitudes dropped per layer
    drop_high: float = fraction(0.01, high_open=True)  # the paper's gamma: largest magnitudes dropped per layer

    def validate(self, where: str, exp: object) -> None:
        if self.drop_low + self.drop_high >= 1:
            raise bad(f"{where}drop_low", self.drop_low, f"drop_low + drop_high < 1 (drop_high={self.drop_high})")


def tails_mask(layer: torch.Tensor, drop_low: float, drop_high: float) -> torch.Tensor:
    """Per row of [n_tasks, n] magnitudes: True between the drop_low and (1 - drop_high) rank quantiles."""
    n = layer.shape[-1]
    rank = layer.argsort(dim=-1).argsort(dim=-1)  # 0 = smallest magnitude
    low, high = int(drop_low * n), n - int(drop_high * n)
    return (rank >= low) & (rank < high)


@MERGERS.register("breadcrumbs")
class Breadcrumbs(Merger):
    Config = BreadcrumbsConfig

    def merge(self, vectors: list[Vector]) -> Vector:
        out = {}
        for name in vectors[0]:  # per layer (a handful of tensors), vectorised within each
            layer = torch.stack([v[name].reshape(-1) for v in vectors])
            mask = tails_mask(layer.abs(), self.cfg.drop_low, self.cfg.drop_high)
            out[name] = (layer * mask).sum(0).reshape(vectors[0][name].shape)
        return out
