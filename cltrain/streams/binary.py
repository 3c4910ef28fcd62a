"""Binary domain-incremental sequences over frozen features (the IBCL setting), from MNIST or Fashion-MNIST.

`binary_pairs`: task k tells class 2k (label 0) from class 2k+1 (label 1), up to 5 tasks.
`binary_one_vs_rest`: task c tells class c (label 1) from the other classes (label 0), up to 10 tasks; each
task takes every image of class c and as many others drawn at random (balanced, so chance is 50 %).
Every task has the same input space (512-d features, cltrain/streams/features.py) and label space {0, 1}, and
no task id is needed at test time.

Layout: the stream's "images" are row numbers into one feature table held by the transform (train rows, then
test rows), and its labels are the binary labels of each task's rows, so a sample that belongs to several
tasks with different labels (one-vs-rest) is stored once. A batch is still an index slice plus one gather.
`stream.val_fraction` holds out part of each task's training rows (`task.val_idx`, as for every stream) that no
learner trains on: IBCL chooses among its zero-shot models there, never on the test set (it requires it > 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cltrain.config import ExperimentConfig, data_root
from cltrain.errors import ConfigError
from cltrain.streams.base import STREAMS, Stream, Task, subsample
from cltrain.streams.datasets import ImageArrays
from cltrain.streams.features import OUTSIDE, load_features
from cltrain.streams.transforms import BatchTransform
from cltrain.streams.vision import make_stream, stream_generator

FEATURE_STREAMS = ("binary_pairs", "binary_one_vs_rest")


class FeatureLookup(BatchTransform):
    """x: row numbers [B, 1] -> their feature vectors [B, D] (one gather on the device)."""

    def __init__(self, table: torch.Tensor):
        super().__init__((0.0,), (1.0,))
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0]]


@dataclass
class FeatureStream(Stream):
    feature_dim: int = 512

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.feature_dim,)


@dataclass
class BinaryTask:
    name: str
    classes: list[int]
    rows: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]  # labels -> (rows, y)


def _pair(k: int) -> BinaryTask:
    a, b = 2 * k, 2 * k + 1

    def rows(labels, gen):
        idx = torch.nonzero((labels == a) | (labels == b), as_tuple=True)[0]
        return idx, (labels[idx] == b).long()
    return BinaryTask(f"{a}-vs-{b}", [a, b], rows)


def _one_vs_rest(c: int) -> BinaryTask:
    def rows(labels, gen):
        pos = torch.nonzero(labels == c, as_tuple=True)[0]
        rest = torch.nonzero(labels != c, as_tuple=True)[0]
        neg = rest[torch.randperm(rest.numel(), generator=gen)[:pos.numel()]]
        idx = torch.cat([pos, neg]).sort().values
        return idx, (labels[idx] == c).long()
    return BinaryTask(f"{c}-vs-rest", [c], rows)


FAMILIES: dict[str, tuple[Callable[[int], BinaryTask], int]] = {
    "binary_pairs": (_pair, 5),
    "binary_one_vs_rest": (_one_vs_rest, 10),
}


def check_binary_config(cfg: ExperimentConfig) -> None:
    """Everything a binary feature stream needs, before any data is read or trained."""
    limit = FAMILIES[cfg.stream.name][1]
    if not 1 <= cfg.stream.n_tasks <= limit:
        raise ConfigError(f"bad value {cfg.stream.n_tasks} for 'stream.n_tasks' with stream {cfg.stream.name!r}; "
                          f"valid: 1..{limit}")
    if cfg.stream.dataset not in OUTSIDE:
        raise ConfigError(f"bad value {cfg.stream.dataset!r} for 'stream.dataset' with stream {cfg.stream.name!r}; "
                          f"valid: {', '.join(OUTSIDE)}")
    if cfg.stream.scenario != "class_incremental":  # the default; these streams are domain-incremental
        raise ConfigError(f"'stream.scenario' does not apply to stream {cfg.stream.name!r} (domain-incremental, "
                          f"labels 0/1); leave it unset")


def _split_rows(labels: torch.Tensor, tasks: list[BinaryTask], gen: torch.Generator, offset: int):
    """Concatenate each task's (feature row, binary label) pairs; returns the arrays and each task's positions."""
    rows, ys, spans, at = [], [], [], 0
    for task in tasks:
        idx, y = task.rows(labels, gen)
        rows.append(idx + offset)
        ys.append(y)
        spans.append(torch.arange(at, at + idx.numel()))
        at += idx.numel()
    return ImageArrays(torch.cat(rows).unsqueeze(1), torch.cat(ys)), spans


def binary_stream(cfg: ExperimentConfig) -> Stream:
    check_binary_config(cfg)
    make_task, _ = FAMILIES[cfg.stream.name]
    specs = [make_task(k) for k in range(cfg.stream.n_tasks)]
    train_f, test_f, record = load_features(cfg.stream.dataset, data_root(cfg.data), cfg.data.download)
    gen = stream_generator(cfg, salt=29)
    train, train_spans = _split_rows(train_f.labels, specs, gen, 0)
    test, test_spans = _split_rows(test_f.labels, specs, gen, len(train_f.labels))
    tasks = []
    for k, spec in enumerate(specs):
        tasks.append(Task(
            id=k, name=spec.name,
            train_idx=subsample(train_spans[k], cfg.stream.train_per_task, gen),
            test_idx=subsample(test_spans[k], cfg.stream.test_per_task, gen),
            classes=[0, 1], meta={"source_classes": spec.classes, "features": record},
        ))  # make_stream carves stream.val_fraction of each task's training rows for validation
    transform = FeatureLookup(torch.cat([train_f.images, test_f.images]))
    base = make_stream(cfg, tasks, train, test, transform, 2, "domain_incremental")
    return FeatureStream(**{f: getattr(base, f) for f in base.__dataclass_fields__}, feature_dim=train_f.images.shape[1])


# One line per family (not a loop): the config catalog reads registrations from the source.
STREAMS.register("binary_pairs")(binary_stream)
STREAMS.register("binary_one_vs_rest")(binary_stream)
