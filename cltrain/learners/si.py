"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

During a task each parameter accumulates w += -g * delta (its contribution to the drop in loss along the
optimisation path); at the task's end its importance grows by w / (total change^2 + xi), and the penalty
c * sum(Omega * (theta - theta*)^2) anchors it at the task's final value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cltrain.config import bounded, positive
from cltrain.distributed import to_device
from cltrain.learners.base import LEARNERS, Learner, TaskSamples, param_dict


@dataclass
class SIConfig:
    c: float = bounded(10.0, 0, 1e12)  # penalty strength (the power-law paper's permuted-MNIST value)
    xi: float = positive(0.1)  # damping of the importance denominator


@LEARNERS.register("si")
class SI(Learner):
    presentations = ("task_aware",)  # importances are consolidated at task ends
    Config = SIConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.omega: dict[str, torch.Tensor] = {}  # consolidated importance
        self.anchor: dict[str, torch.Tensor] = {}  # parameters at the end of the last task
        self.path: dict[str, torch.Tensor] = {}  # running path integral w of the current task
        self.start: dict[str, torch.Tensor] = {}  # parameters at the start of the current task
        self._before: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}

    def _params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in param_dict(self.model).items()}

    def _ensure_started(self) -> None:
        if not self.start:
            self.start = {k: v.clone() for k, v in self._params().items()}
            self.path = {k: torch.zeros_like(v) for k, v in self.start.items()}

    def penalty(self):
        if not self.omega:
            return 0.0
        params = param_dict(self.model)
        return self.method.c * sum((self.omega[k] * (params[k] - self.anchor[k]).pow(2)).sum() for k in self.omega)

    def before_update(self, optimizer):
        self._ensure_started()
        self._flush()
        self._before = {k: v.clone() for k, v in self._params().items()}
        self._grads = {k: p.grad.detach().clone() for k, p in param_dict(self.model).items() if p.grad is not None}

    def _flush(self) -> None:
        """Add the last step's -g * delta to the path integral once the step has been taken.

        Done lazily (next step, or the task's end) rather than in on_train_batch_end, whose order relative
        to the callbacks that end a phase is Lightning's business, not ours.
        """
        params = self._params()
        for k, g in self._grads.items():
            self.path[k] -= g * (params[k] - self._before[k])
        self._grads, self._before = {}, {}

    def on_task_end(self, task_id: int, samples: TaskSamples) -> None:
        self._ensure_started()
        self._flush()
        params = self._params()
        for k, p in params.items():
            gain = self.path[k] / ((p - self.start[k]).pow(2) + self.method.xi)
            # A negative path integral (noise, overshoot) would reward drifting away: count it as zero.
            self.omega[k] = self.omega.get(k, torch.zeros_like(p)) + gain.clamp(min=0)
        self.anchor = {k: v.clone() for k, v in params.items()}
        self.start = {}

    _STATE = ("omega", "anchor", "path", "start", "_before", "_grads")  # the last two: a mid-phase checkpoint

    def get_extra_state(self) -> Any:
        return {k: getattr(self, k) for k in self._STATE}

    def set_extra_state(self, state: Any) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])

    def on_train_start(self) -> None:
        # a checkpoint restores them on the CPU: to the training device once per fit, not mixed in every step
        for k in self._STATE:
            setattr(self, k, to_device(getattr(self, k), self.device))
