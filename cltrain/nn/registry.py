from __future__ import annotations

from typing import Callable

from torch import nn

from cltrain.registry import Registry

# name -> builder(model config, input shape (C, H, W), number of classes) -> nn.Module
MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model.name")
