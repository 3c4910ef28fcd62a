"""Reusable network blocks, registered by name for `model.name`."""
from cltrain.nn import bayes, dt, lenet, mlp  # noqa: F401  (registration)
from cltrain.nn.registry import MODELS

__all__ = ["MODELS"]
