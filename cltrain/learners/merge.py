"""Continual model merging: fine-tune the shared base on each task, keep the task vector, merge at each boundary.

Every task starts from the same base weights (the run's initial network, or `learner.base`: a state dict
pre-trained outside the stream). At the task's end its task vector (expert - base) is kept and all vectors so
far are merged with `learner.method` (cltrain/merging/); the model evaluated after the phase is
`base + lam * merged`. lam is `learner.lam`, or the grid value with the best mean accuracy on validation
samples: up to `learner.val_per_task` rows of each task's validation split (stream.val_fraction > 0: rows never
trained on; the trainer's seeded `samples(..., split="val")` hook), never test data; AdaMerging's unlabelled
inputs are the same rows. A streaming method (running_average) keeps only its merged state between tasks.
Task vectors, the merger's state and the validation samples are in the checkpoint (exact resume; `cltrain
merge RUN_DIR` reads them).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch.func import functional_call

from cltrain.config import bad, bounded, choice, component_config, count, fraction, positive, text
from cltrain.learners.base import LEARNERS, Learner, TaskSamples
from cltrain.merging import MERGERS, apply, task_vector
from cltrain.merging.base import MergeData

# Options of the merging methods, as `learner.<key>`: each method's Config declares which of them it reads.
METHOD_OPTIONS = ("density", "drop_low", "drop_high", "granularity", "coef_init", "coef_steps", "coef_lr")


@dataclass
class MergeConfig:
    method: str = choice("task_arithmetic", "adamerging", "average", "task_arithmetic", "ties", "dare",
                         "breadcrumbs", "pcb", "running_average")
    lam: Optional[float] = bounded(None, 0, 10, low_open=True)  # None: the best of lam_grid on validation samples
    lam_grid: list[float] = bounded([0.25, 0.5, 0.75, 1.0, 1.5], 0, 10, low_open=True)
    val_per_task: int = count(500, high=100_000)  # validation rows per task (at most the split's) for lam / AdaMerging
    base: Optional[str] = text(None)  # a state dict (torch.save) of the model to start every task from
    density: float = fraction(0.2, low_open=True)  # ties, dare, pcb: fraction of entries kept
    drop_low: float = fraction(0.85, high_open=True)  # breadcrumbs: smallest magnitudes dropped per layer
    drop_high: float = fraction(0.01, high_open=True)  # breadcrumbs: largest magnitudes dropped per layer
    granularity: str = choice("layer", "layer", "task")  # adamerging: coefficients per (task, tensor) or per task
    coef_init: float = fraction(0.3)  # adamerging: the coefficients' starting value
    coef_steps: int = count(100, high=100_000)  # adamerging: Adam steps on the prediction entropy
    coef_lr: float = positive(0.001, high=10)  # adamerging: Adam's step size

    def validate(self, where: str, exp: Any) -> None:
        method_config(self, where)
        needs_val = needs_validation(self)
        if needs_val and exp.stream.val_fraction <= 0:
            from cltrain.catalog import lookup

            learns = lookup("MERGERS", self.method).learns_scale
            reason = (f"{where}method={self.method!r} learns its coefficients" if learns
                      else f"{where}lam=null picks lam")
            raise bad("stream.val_fraction", exp.stream.val_fraction,
                      f"> 0, e.g. 0.1 ({reason} on the stream's validation split, never on training or test data)"
                      + ("" if learns else f", or a fixed {where}lam"))
        if not needs_val and self.val_per_task != type(self)().val_per_task:
            raise bad(f"{where}val_per_task", self.val_per_task, f"its default: {where}lam is fixed and "
                      f"{where}method={self.method!r} reads no data")
        if self.lam is not None and self.lam_grid != type(self)().lam_grid:
            raise bad(f"{where}lam_grid", self.lam_grid, f"its default unless {where}lam=null (lam is fixed)")
        if self.base is not None and not Path(self.base).expanduser().is_file():
            raise bad(f"{where}base", self.base, "a file holding a state dict saved with torch.save")


def needs_validation(cfg: Any) -> bool:
    """Does this config read validation rows: lam chosen on them, or coefficients learned from them?"""
    from cltrain.catalog import lookup

    return cfg.lam is None or lookup("MERGERS", cfg.method).learns_scale


def method_config(cfg: Any, where: str) -> Any:
    """The chosen method's own Config from the flat `learner.<key>` options; an option it does not read,
    changed from its default, is refused (it would be silently ignored)."""
    from cltrain.catalog import lookup  # reads the merging files' source: no torch import at config time

    merger = lookup("MERGERS", cfg.method)
    if merger.learns_scale and cfg.lam is not None:
        raise bad(f"{where}lam", cfg.lam, f"null: {where}method={cfg.method!r} learns its own coefficients")
    schema = merger.Config
    reads = {f.name for f in fields(schema)} if schema is not None else set()
    defaults = type(cfg)()
    for key in METHOD_OPTIONS:
        if key not in reads and getattr(cfg, key) != getattr(defaults, key):
            raise bad(f"{where}{key}", getattr(cfg, key), f"its default: {where}method={cfg.method!r} does not read it")
    return component_config({k: getattr(cfg, k) for k in reads}, schema, where.rstrip("."))


@LEARNERS.register("merge")
class Merge(Learner):
    Config = MergeConfig
    presentations = ("task_aware",)  # it needs task ends to take task vectors

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        m = self.method
        self.merger = MERGERS.get(m.method)(method_config(m, "learner."), self.seed)
        if m.base is not None:
            self.model.load_state_dict(torch.load(Path(m.base).expanduser(), map_location="cpu"))
        self.base: Optional[dict[str, torch.Tensor]] = None  # taken at the first task start (on the device)
        self.vectors: list[dict[str, torch.Tensor]] = []  # offline methods: every task vector
        self.fold_state: Optional[dict[str, Any]] = None  # streaming methods: their constant-size state
        self.val: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (x, y, task id) per task, when lam is chosen
        self.lams: list[float] = []  # lam used after each task
        self.tasks: list[int] = []  # the task id of each phase's task vector

    # ---- task boundaries ------------------------------------------------------------------------------
    def on_task_start(self, task_id: int) -> None:
        if self.base is None:
            self.base = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.model.load_state_dict(self.base)  # every expert is fine-tuned from the same weights
        self.reset_optimizer_state()  # momentum from the previous expert would pull towards it

    @torch.no_grad()
    def on_task_end(self, task_id: int, samples: TaskSamples) -> None:
        tau = task_vector(self.model.state_dict(), self.base)
        self.tasks.append(task_id)
        if self.merger.streaming:
            self.fold_state = self.merger.fold(self.fold_state, tau)
        else:
            self.vectors.append(tau)
        if self.method.lam is None or self.merger.learns_scale:
            n = self.method.val_per_task
            batch = next(iter(samples(n, n, split="val")))  # held-out rows (config resolution made sure of them)
            self.val.append((batch.x, batch.y, task_id))
        merged = self.merged_vector()
        lam = 1.0 if self.merger.learns_scale else self.method.lam or self.choose_lam(merged)
        self.lams.append(lam)
        self.model.load_state_dict(apply(self.base, merged, lam))

    def merged_vector(self) -> dict[str, torch.Tensor]:
        if self.merger.streaming:
            return self.merger.folded(self.fold_state)
        data = MergeData(self.base, self.weights_logits, [(x, torch.full_like(y, t)) for x, y, t in self.val])
        return self.merger.combine(self.vectors, data)

    def weights_logits(self, weights: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's (masked) logits with the given weights, differentiable in them (AdaMerging)."""
        return self.mask(functional_call(self.model, weights, (x,)), t)

    def choose_lam(self, merged: dict[str, torch.Tensor]) -> float:
        """The grid value whose merged model has the best mean accuracy over the tasks' validation samples."""
        scores = []
        for lam in self.method.lam_grid:
            self.model.load_state_dict(apply(self.base, merged, lam))
            scores.append(validation_accuracy(self, self.val))
        return self.method.lam_grid[int(torch.tensor(scores).argmax())]

    # ---- state ----------------------------------------------------------------------------------------
    def merge_state(self) -> dict[str, Any]:
        """What the merger keeps between tasks (task vectors or the streaming state): its memory."""
        return {"vectors": self.vectors, "fold_state": self.fold_state}

    def get_extra_state(self) -> Any:
        return {"base": self.base, **self.merge_state(), "val": self.val, "lams": self.lams,
                "tasks": self.tasks, "method": self.method.method}

    def set_extra_state(self, state: Any) -> None:
        self.base, self.vectors, self.fold_state = state["base"], list(state["vectors"]), state["fold_state"]
        self.val, self.lams, self.tasks = list(state["val"]), list(state["lams"]), list(state["tasks"])

    def final_metrics(self, ctx: Any) -> dict[str, Any]:
        return {"merge_lams": self.lams}


@torch.no_grad()
def validation_accuracy(learner: Learner, val: list[tuple[torch.Tensor, torch.Tensor, int]]) -> float:
    """Mean over tasks of the accuracy on their validation samples (task ids given: task-aware streams)."""
    accs = [(learner.predict(x, torch.full_like(y, t)) == y).float().mean() for x, y, t in val]
    return float(torch.stack(accs).mean())
