"""Fully connected ReLU network, the standard model for permuted/rotated MNIST."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from cltrain.config import ModelConfig, component_config
from cltrain.errors import ConfigError
from cltrain.nn.modulators import POOL_HOSTS, Modulated, PoolHost
from cltrain.nn.registry import MODELS


@dataclass
class MLPOptions:
    pretrained: Optional[str] = None  # weights to start from (a run's checkpoints/last.pt or a state_dict file)


class MLP(nn.Sequential):
    def __init__(self, in_features: int, hidden: list[int], n_classes: int):
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip([in_features] + hidden[:-1], hidden):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(hidden[-1] if hidden else in_features, n_classes))
        super().__init__(*layers)


def check_mlp(cfg: ModelConfig) -> MLPOptions:
    opts = component_config(cfg.options, MLPOptions, "model.options")
    if opts.pretrained is not None and not Path(opts.pretrained).expanduser().is_file():
        raise ConfigError(f"pre-trained checkpoint model.options.pretrained={opts.pretrained!r} not found; make it "
                          f"first (e.g. `cltrain fit l2m/pmnist_pretrain`), or give its path")
    return opts


@MODELS.register("mlp")
def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    from cltrain.nn.dt import load_weights  # (shared loader: state_dict files and cltrain checkpoints)

    model = MLP(math.prod(input_shape), list(cfg.hidden), n_classes)
    opts = check_mlp(cfg)
    if opts.pretrained is not None:
        load_weights(model, str(Path(opts.pretrained).expanduser()))
    return model


build_mlp.check = check_mlp


def _mlp_targets(model: MLP, kind: str) -> list[tuple[Modulated, int, int]]:
    """Every Linear layer carries a pool entry's modulator (wrapped in place; the weights stay where they are)."""
    out = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            model[i] = Modulated(layer)
        if isinstance(model[i], Modulated):
            out.append((model[i], model[i].base.in_features, model[i].base.out_features))
    return out


def _first_linear(model: MLP) -> nn.Linear:
    layer = model[1]
    return layer.base if isinstance(layer, Modulated) else layer


def _mlp_query(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """The frozen first layer's ReLU features of each input (no gradient)."""
    with torch.no_grad():
        return torch.relu(_first_linear(model)(x.flatten(1)))


POOL_HOSTS.register("mlp")(PoolHost(MLP, _mlp_targets, _mlp_query, lambda m: _first_linear(m).out_features))
