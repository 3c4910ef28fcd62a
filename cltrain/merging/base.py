"""Model merging on task vectors: the registry, the Merger interface and the tensor helpers every method shares.

A task vector is the difference between an expert's weights and the shared base weights it was fine-tuned
from, as a dict name -> tensor (a state dict's floating-point entries). A Merger combines several task vectors
into one; the merged model is `base + lam * merged` (`apply`), with lam chosen on validation data by whoever
calls the merger (the `merge` learner, `cltrain merge`), so every method shares one scaling rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch

from cltrain.registry import Registry

Vector = dict[str, torch.Tensor]


@dataclass
class MergeData:
    """What a data-driven merger (AdaMerging) may use besides the task vectors."""

    base: "Vector"
    logits: Callable[["Vector", torch.Tensor, torch.Tensor], torch.Tensor]  # (weights, x, task ids) -> logits
    unlabelled: list[tuple[torch.Tensor, torch.Tensor]]  # (x, task ids) per task: inputs only, never labels


class Merger:
    """One merging method. `merge(vectors)` returns the merged task vector (not yet scaled by lam).

    A streaming merger (`streaming = True`) also folds vectors one at a time into a state of constant size
    (`fold`), so a continual learner never keeps more than that state, however many tasks it meets.
    """

    Config: ClassVar[Optional[type]] = None  # the method's options (`learner.<key>`, `merge.<key>`)
    streaming: ClassVar[bool] = False
    # True: the merged vector carries its own scale (learned coefficients); callers apply it with lam = 1
    learns_scale: ClassVar[bool] = False

    def __init__(self, cfg: Any = None, seed: int = 0):
        self.cfg = cfg
        self.seed = seed  # DARE's masks: cltrain.seeding.generator(seed, "dare_mask", ...)

    def merge(self, vectors: list[Vector]) -> Vector:
        raise NotImplementedError

    def combine(self, vectors: list[Vector], data: MergeData) -> Vector:
        """The merged task vector; a data-driven method overrides this to use `data`."""
        return self.merge(vectors)

    def fold(self, state: Optional[dict[str, Any]], vector: Vector) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} is not a streaming merger")

    @staticmethod
    def folded(state: dict[str, Any]) -> Vector:
        return state["merged"]


# name -> Merger subclass. One file per method registers itself here (`learner.method`, `cltrain merge method=`).
MERGERS: Registry[type[Merger]] = Registry("merging method", "method")


def task_vector(expert: Vector, base: Vector) -> Vector:
    """expert - base for every floating-point entry both hold."""
    return {k: (expert[k] - base[k]).detach() for k in base if torch.is_floating_point(base[k])}


def apply(base: Vector, merged: Vector, lam: float) -> Vector:
    """base + lam * merged (entries without a task vector are the base's)."""
    return {k: (v + lam * merged[k]) if k in merged else v.clone() for k, v in base.items()}


def stack(vectors: list[Vector]) -> tuple[torch.Tensor, list[tuple[str, torch.Size, int]]]:
    """The task vectors as one [n_tasks, n_params] matrix, and the layout to split a row back into a dict."""
    names = list(vectors[0])
    layout = [(k, vectors[0][k].shape, vectors[0][k].numel()) for k in names]
    rows = torch.stack([torch.cat([v[k].reshape(-1) for k in names]) for v in vectors])
    return rows, layout


def unstack(row: torch.Tensor, layout: list[tuple[str, torch.Size, int]]) -> Vector:
    parts = torch.split(row, [n for _, _, n in layout])
    return {k: p.reshape(shape) for (k, shape, _), p in zip(layout, parts)}


def keep_top(values: torch.Tensor, density: float) -> torch.Tensor:
    """A mask, per row, of the `density` fraction of entries with the largest values (at least one)."""
    k = max(1, round(density * values.shape[-1]))
    threshold = values.topk(k, dim=-1).values[..., -1:]
    return values >= threshold


def size_bytes(tree: Any) -> int:
    """Bytes held by the tensors of a (nested) dict / list: what a merger keeps between tasks."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(size_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(size_bytes(v) for v in tree)
    return 0
