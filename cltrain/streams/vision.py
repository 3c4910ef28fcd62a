"""Shared plumbing for the image stream families: load both splits, seed, subsample per task."""
from __future__ import annotations

import dataclasses

import torch

from cltrain.config import ExperimentConfig, data_root
from cltrain.streams.base import Stream, Task, carve_validation, resolve_order, subsample
from cltrain.streams.datasets import DATASETS, ImageArrays, VisionSpec, load_split
from cltrain.streams.transforms import BatchTransform


def load_dataset(cfg: ExperimentConfig) -> tuple[VisionSpec, ImageArrays, ImageArrays]:
    """The dataset's spec (its mean and sd set to 0 and 1 under stream.pixels=unit) and its two splits, each
    image inside a blank border of stream.pad pixels."""
    spec = DATASETS.get(cfg.stream.dataset)
    if cfg.stream.pixels == "unit":  # (x/255 - 0) / 1: the same floats as x/255
        spec = dataclasses.replace(spec, mean=(0.0,) * len(spec.mean), std=(1.0,) * len(spec.std))
    root = data_root(cfg.data)
    splits = [load_split(cfg.stream.dataset, root, train, cfg.data.download) for train in (True, False)]
    train, test = (padded(split, cfg.stream.pad) for split in splits)
    return spec, train, test


def padded(split: ImageArrays, pad: int) -> ImageArrays:
    """Images with a border of `pad` zero (black) pixels on every side, stored once: the task transforms (a
    permutation of all H*W positions, a rotation) then act on the padded image, as torchvision's Pad would."""
    if pad == 0:
        return split
    return ImageArrays(torch.nn.functional.pad(split.images, (pad, pad, pad, pad)).contiguous(), split.labels)


def stream_generator(cfg: ExperimentConfig, salt: int) -> torch.Generator:
    """All randomness of a stream comes from the experiment seed, so one seed gives one stream everywhere."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + salt)


def same_data_tasks(
    cfg: ExperimentConfig, train: ImageArrays, test: ImageArrays, n_classes: int, kind: str, meta: list[dict]
) -> list[Task]:
    """Tasks that all use the whole dataset (permuted, rotated), each with its own seeded subsample."""
    gen = stream_generator(cfg, salt=17)
    all_train, all_test = torch.arange(len(train.labels)), torch.arange(len(test.labels))
    return [
        Task(
            id=t,
            name=f"{kind}-{t}",
            train_idx=subsample(all_train, cfg.stream.train_per_task, gen),
            test_idx=subsample(all_test, cfg.stream.test_per_task, gen),
            classes=list(range(n_classes)),
            meta=meta[t],
        )
        for t in range(cfg.stream.n_tasks)
    ]


def make_stream(
    cfg: ExperimentConfig, tasks: list[Task], train: ImageArrays, test: ImageArrays, transform: BatchTransform,
    n_classes: int, scenario: str,
) -> Stream:
    carve_validation(tasks, cfg.stream.val_fraction, cfg.seed)
    return Stream(
        tasks=tasks,
        order=resolve_order(len(tasks), cfg.stream.order),
        train=train,
        test=test,
        transform=transform,
        n_classes=n_classes,
        presentation=cfg.stream.presentation,
        scenario=scenario,
    )
