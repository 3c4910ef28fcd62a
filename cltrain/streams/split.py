"""Split MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100: the classes are dealt out to tasks in equal groups.

Class-incremental (one head over all classes, no task id at test time), task-incremental (the task id
restricts the prediction to that task's classes) or domain-incremental (every task has the same labels, the
position of a class within its task: split MNIST's "first or second digit of the pair", van de Ven & Tolias
2019), chosen by `stream.scenario`.
"""
from __future__ import annotations

from typing import Optional

import torch

from cltrain.config import ExperimentConfig
from cltrain.errors import ConfigError
from cltrain.streams.base import STREAMS, Stream, Task, subsample
from cltrain.streams.datasets import ImageArrays
from cltrain.streams.transforms import BatchTransform
from cltrain.streams.vision import load_dataset, make_stream, stream_generator


def class_groups(n_classes: int, n_tasks: int, order: Optional[list[int]] = None) -> list[list[int]]:
    """The classes dealt out in `order` (default: label order), n_classes / n_tasks per task."""
    if n_tasks < 1 or n_classes % n_tasks:
        divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
        raise ConfigError(f"bad value {n_tasks} for 'stream.n_tasks' with a split stream of {n_classes} classes; "
                          f"valid: {', '.join(map(str, divisors))}")
    order = list(range(n_classes)) if order is None else order
    size = n_classes // n_tasks
    return [order[t * size:(t + 1) * size] for t in range(n_tasks)]


def class_order(cfg: ExperimentConfig, n_classes: int) -> Optional[list[int]]:
    """stream.class_order: None for label order; `shuffled` draws a permutation from the run's seed, from a
    generator of its own so the subsamples and validation splits of a natural-order run stay as they were."""
    if cfg.stream.class_order == "natural":
        return None
    return torch.randperm(n_classes, generator=stream_generator(cfg, salt=29)).tolist()


def _indices_of(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    return torch.nonzero(torch.isin(labels, torch.tensor(classes)), as_tuple=True)[0]


@STREAMS.register("split", reads=("scenario", "class_order", "active_classes", "pixels", "pad"))
def split_stream(cfg: ExperimentConfig) -> Stream:
    spec, train, test = load_dataset(cfg)
    gen = stream_generator(cfg, salt=17)
    groups = class_groups(spec.n_classes, cfg.stream.n_tasks, class_order(cfg, spec.n_classes))
    tasks = [
        Task(
            id=t,
            name=f"split-{'-'.join(map(str, classes))}",
            train_idx=subsample(_indices_of(train.labels, classes), cfg.stream.train_per_task, gen),
            test_idx=subsample(_indices_of(test.labels, classes), cfg.stream.test_per_task, gen),
            classes=classes,
        )
        for t, classes in enumerate(groups)
    ]
    transform = BatchTransform(spec.mean, spec.std)
    if cfg.stream.scenario == "domain_incremental":
        return _domain_incremental(cfg, tasks, train, test, transform, groups)
    return make_stream(cfg, tasks, train, test, transform, spec.n_classes, cfg.stream.scenario)


def _domain_incremental(cfg: ExperimentConfig, tasks: list[Task], train: ImageArrays, test: ImageArrays,
                        transform: BatchTransform, groups: list[list[int]]) -> Stream:
    """Relabel every class by its position within its task: one shared `size`-way head, no task id needed.

    Every sample belongs to exactly one task, so relabelling the shared arrays loses nothing. (In label order
    the position is the label modulo the group size; a shuffled order needs the table.)
    """
    position = torch.empty(sum(map(len, groups)), dtype=torch.long)
    for group in groups:
        position[torch.tensor(group)] = torch.arange(len(group))
    train, test = ImageArrays(train.images, position[train.labels]), ImageArrays(test.images, position[test.labels])
    size = len(groups[0])
    for task in tasks:
        task.meta["classes"], task.classes = task.classes, list(range(size))
    return make_stream(cfg, tasks, train, test, transform, size, "domain_incremental")
