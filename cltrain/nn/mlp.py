"""Fully connected ReLU network, the standard model for permuted/rotated MNIST."""
from __future__ import annotations

import math

from torch import nn

from cltrain.config import ModelConfig
from cltrain.nn.registry import MODELS


class MLP(nn.Sequential):
    def __init__(self, in_features: int, hidden: list[int], n_classes: int):
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip([in_features] + hidden[:-1], hidden):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(hidden[-1] if hidden else in_features, n_classes))
        super().__init__(*layers)


@MODELS.register("mlp")
def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), list(cfg.hidden), n_classes)
