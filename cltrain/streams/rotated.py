"""Rotated MNIST / Fashion-MNIST: task t is the whole dataset rotated by t * max_angle / n_tasks degrees."""
from __future__ import annotations

import torch

from cltrain.config import ExperimentConfig
from cltrain.streams.base import STREAMS, Stream
from cltrain.streams.transforms import RotateTransform
from cltrain.streams.vision import load_dataset, make_stream, same_data_tasks


@STREAMS.register("rotated", reads=("max_angle", "pixels", "pad"))
def rotated_stream(cfg: ExperimentConfig) -> Stream:
    spec, train, test = load_dataset(cfg)
    n = cfg.stream.n_tasks
    angles = torch.arange(n, dtype=torch.float32) * (cfg.stream.max_angle / n)
    tasks = same_data_tasks(cfg, train, test, spec.n_classes, "rotated", [{"angle": float(a)} for a in angles])
    return make_stream(cfg, tasks, train, test, RotateTransform(angles, spec.mean, spec.std), spec.n_classes,
                       "domain_incremental")
