"""Tasks and streams: what a continual experiment presents to a learner, and in which order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from cltrain.registry import Registry
from cltrain.streams.datasets import ImageArrays
from cltrain.streams.transforms import BatchTransform


@dataclass
class Task:
    """One distribution: which base samples it uses and which labels it has. Knows nothing of models."""

    id: int
    name: str
    train_idx: torch.Tensor  # indices into Stream.train
    test_idx: torch.Tensor  # indices into Stream.test
    classes: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    # indices into Stream.train held out for validation (stream.val_fraction); never trained on
    val_idx: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def n_train(self) -> int:
        return int(self.train_idx.numel())


@dataclass
class Stream:
    """Distinct tasks over shared base arrays, the order they are met in, and how they are presented."""

    tasks: list[Task]
    order: list[int]  # task id trained in each phase; a task may recur
    train: ImageArrays
    test: ImageArrays
    transform: BatchTransform
    n_classes: int
    presentation: str = "task_aware"  # or "task_agnostic": no task ids or boundaries reach the learner
    scenario: str = "domain_incremental"  # "class_incremental" / "task_incremental" for split streams
    evaluator: str = "accuracy"  # how each phase scores every task: a name in cltrain.evaluation.EVALUATORS

    @property
    def n_phases(self) -> int:
        return len(self.order)

    @property
    def has_val(self) -> bool:
        return any(task.val_idx.numel() for task in self.tasks)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    @property
    def task_aware(self) -> bool:
        return self.presentation == "task_aware"

    @property
    def device(self) -> torch.device:
        """Where the stream's arrays are (the training device once the trainer has placed them)."""
        return self.train.labels.device

    def train_batch(self, base: torch.Tensor, task_ids: torch.Tensor,
                    task: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of training rows `base` (indices into `train`); other stream kinds override this.

        `task` is set when every row is that task's: the transform may take a cheaper path to the same values.
        `base` and `task_ids` live on the stream's device (Stream.to moves the tasks' indices there).
        The result must depend on the rows alone (not on the batch they come in), so that the loader may
        transform a whole phase at once (cltrain.streams.loader).
        """
        # index_select, not images[base]: the same rows, but torch's advanced indexing walks a 4-D uint8
        # tensor element by element on the CPU (~6x slower for a 128-row batch, measured).
        images = self.train.images.index_select(0, base)
        x = self.transform(images, task_ids) if task is None else self.transform.for_task(images, task)
        return x, self.train.labels.index_select(0, base)

    def class_mask(self) -> torch.Tensor | None:
        """[n_tasks, n_classes] bool: the labels each task may predict (task-incremental only)."""
        return self.task_classes() if self.scenario == "task_incremental" else None

    def task_classes(self) -> torch.Tensor:
        """[n_tasks, n_classes] bool: the labels of each task's samples."""
        mask = torch.zeros(len(self.tasks), self.n_classes, dtype=torch.bool)
        for task in self.tasks:
            mask[task.id, task.classes] = True
        return mask

    def to(self, device: torch.device) -> "Stream":
        """Put the base arrays and transform tables on the training device once, for the whole run."""
        self.train = ImageArrays(self.train.images.to(device), self.train.labels.to(device))
        self.test = ImageArrays(self.test.images.to(device), self.test.labels.to(device))
        self.transform = self.transform.to(device)
        for task in self.tasks:
            task.train_idx, task.test_idx = task.train_idx.to(device), task.test_idx.to(device)
            task.val_idx = task.val_idx.to(device)
        return self


# A stream family: (experiment config, data root) -> Stream. One file per family registers itself here.
STREAMS: Registry[Callable[..., Stream]] = Registry("stream", "stream.name")


def subsample(idx: torch.Tensor, limit: int | None, generator: torch.Generator) -> torch.Tensor:
    """A seeded random subset of `limit` indices (all of them when limit is None or larger)."""
    if limit is None or limit >= idx.numel():
        return idx
    return idx[torch.randperm(idx.numel(), generator=generator)[:limit]].sort().values


def carve_validation(tasks: list[Task], fraction: float, seed: int) -> None:
    """Move a seeded `fraction` of each task's training indices to its validation split (stream.val_fraction).

    Each task draws from its own generator (cltrain.seeding, purpose "val_split", task id), so a task's split
    does not depend on the other tasks; the carved samples leave train_idx, so no schedule, replay buffer or
    method hook ever trains on them. At least one sample stays on each side.
    """
    from cltrain.seeding import generator

    if fraction <= 0:
        return
    for task in tasks:
        n = task.n_train
        n_val = min(n - 1, max(1, round(n * fraction)))
        perm = torch.randperm(n, generator=generator(seed, "val_split", task.id))
        task.val_idx = task.train_idx[perm[:n_val]].sort().values
        task.train_idx = task.train_idx[perm[n_val:]].sort().values


def resolve_order(n_tasks: int, order: list[int] | None) -> list[int]:
    from cltrain.errors import ConfigError

    if order is None:
        return list(range(n_tasks))
    if not order or min(order) < 0 or max(order) >= n_tasks or set(order) != set(range(n_tasks)):
        raise ConfigError(
            f"bad value {order} for 'stream.order'; valid: a list of task ids covering 0..{n_tasks - 1} (stream.n_tasks)"
        )
    return list(order)
