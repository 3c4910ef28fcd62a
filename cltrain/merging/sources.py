"""Where `cltrain merge` finds a run's task vectors: one adapter per kind of run (registry SOURCES, `source=`).

A Source turns a finished run folder into Experts: base weights, task vectors (expert - base) and which vector
is the expert of which task. Which source a run takes is decided before torch is imported, from the sources'
literal traits (read by cltrain.catalog): `for_learners`, the run's learner.name values it reads (() for any
learner), and `needs_files`, the files the run folder must hold. `cltrain merge` takes the source made for the
run's learner; failing that, a source for any learner whose files are there (`phases`); failing that, it
refuses the run with one line (nothing to merge).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch

from cltrain.merging.base import Vector
from cltrain.registry import Registry


@dataclass
class RunView:
    """What a source may read: the run folder, its resolved config, its stream (rebuilt from the config) and a
    builder of its network j as the run initialised it (seeding purpose "model", index j)."""

    path: Path
    cfg: Any
    stream: Any
    build: Callable[[int], torch.nn.Module]
    base: Optional[str] = None  # `cltrain merge ... base=PATH`, for a source with takes_base


@dataclass
class Experts:
    base: Vector
    vectors: list[Vector]
    owners: dict[int, int]  # task id -> index of its expert's vector (tasks no expert learned are absent)


class Source:
    for_learners: ClassVar[tuple[str, ...]] = ()  # the learner.name values this source reads; (): any learner
    needs_files: ClassVar[tuple[str, ...]] = ("checkpoints/last.pt",)  # relative to the run folder
    takes_base: ClassVar[bool] = False  # reads `base=PATH` (the weights its vectors are taken from)

    def load(self, run: RunView) -> Experts:
        raise NotImplementedError


# name -> Source subclass; one file per source (source_*.py) registers itself here (`cltrain merge source=`).
SOURCES: Registry[type[Source]] = Registry("task-vector source", "source")


def network_weights(learner_state: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The entries of a learner's state dict under `prefix`, with the prefix removed (a network's state dict)."""
    return {k[len(prefix):]: v for k, v in learner_state.items() if k.startswith(prefix)}
