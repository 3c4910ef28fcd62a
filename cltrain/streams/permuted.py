"""Permuted MNIST / Fashion-MNIST: every task is the whole dataset under its own fixed pixel permutation."""
from __future__ import annotations

import torch

from cltrain.config import ExperimentConfig
from cltrain.streams.base import STREAMS, Stream
from cltrain.streams.transforms import PermuteTransform
from cltrain.streams.vision import load_dataset, make_stream, same_data_tasks, stream_generator


def permutations(n_tasks: int, n_pixels: int, first_identity: bool, generator: torch.Generator) -> torch.Tensor:
    perms = torch.stack([torch.randperm(n_pixels, generator=generator) for _ in range(n_tasks)])
    if first_identity:
        perms[0] = torch.arange(n_pixels)
    return perms


@STREAMS.register("permuted", reads=("first_identity", "pixels", "pad"))
def permuted_stream(cfg: ExperimentConfig) -> Stream:
    spec, train, test = load_dataset(cfg)
    h, w = train.images.shape[-2:]
    perms = permutations(cfg.stream.n_tasks, h * w, cfg.stream.first_identity, stream_generator(cfg, salt=1))
    meta = [{"identity": bool(torch.equal(p, torch.arange(h * w)))} for p in perms]
    tasks = same_data_tasks(cfg, train, test, spec.n_classes, "permuted", meta)
    transform = PermuteTransform(perms, spec.mean, spec.std)
    return make_stream(cfg, tasks, train, test, transform, spec.n_classes, "domain_incremental")
