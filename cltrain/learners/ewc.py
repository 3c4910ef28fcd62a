"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), offline and online (Schwarz et al. 2018).

Offline keeps one (Fisher, anchor) pair per task (its penalty is their sum, merged into one quadratic); online
keeps a single running Fisher, decayed by gamma, anchored at the latest parameters. The diagonal Fisher is the
mean of squared per-sample gradients of the log-likelihood of the true label (or of the model's own prediction,
`fisher_labels=predicted`, as van de Ven & Tolias's code does), computed with torch.func (vmap over samples, no
Python loop).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from cltrain.config import bad, bounded, choice, count, fraction
from cltrain.distributed import to_device
from cltrain.learners.base import LEARNERS, Learner, TaskSamples, param_dict
from cltrain.nn.modes import in_mode


@dataclass
class EWCConfig:
    lam: float = bounded(100.0, 0, 1e12)  # penalty strength lambda
    mode: str = choice("offline", "offline", "online")
    gamma: float = fraction(1.0, low_open=True)  # online mode: decay of the running Fisher
    fisher_samples: int = count(500)  # training samples of the finished task used to estimate its Fisher
    # the label whose log-likelihood is differentiated: the data's ("empirical Fisher") or the model's arg-max
    # prediction (van de Ven & Tolias's default); they differ only on the samples the model gets wrong
    fisher_labels: str = choice("true", "true", "predicted")
    fisher_chunk: int = count(64, high=1 << 16)  # per-sample gradients computed this many at a time (memory bound)

    def validate(self, where: str, exp: Any) -> None:
        if self.mode == "offline" and self.gamma != 1.0:  # offline keeps every task's Fisher undecayed
            raise bad(f"{where}gamma", self.gamma, f"1.0 with {where}mode=offline (gamma decays online EWC's "
                      f"running Fisher; offline EWC has none), or {where}mode=online")


def fisher_targets(logits: torch.Tensor, y: torch.Tensor, labels: str) -> torch.Tensor:
    """The labels the Fisher differentiates: the data's, or the model's prediction (masked classes never win)."""
    if labels not in ("true", "predicted"):
        raise ValueError(f"fisher labels {labels!r}; valid: true, predicted")
    return y if labels == "true" else logits.detach().argmax(1)


def linear_fisher(learner: Learner, samples: TaskSamples, n: int, chunk: int,
                  labels: str = "true") -> dict[str, torch.Tensor] | None:
    """The same Fisher without materialising per-sample gradients, for models whose weights are all Linear.

    Sample i's gradient of a Linear weight is the outer product d_i a_i^T (d_i: gradient at the layer's output,
    a_i: its input), so sum_i (d_i a_i^T)^2 = (d^2)^T (a^2): one matmul per layer instead of N outer products.
    Returns None when some trainable parameter is not in a Linear layer (then the generic path runs).
    """
    linears = {name: m for name, m in learner.model.named_modules() if isinstance(m, nn.Linear)}
    covered = {f"{name}.{p}" for name, m in linears.items() for p, _ in m.named_parameters()}
    if covered != set(param_dict(learner.model)):
        return None
    inputs, outputs = {}, {}

    def keep(name: str):
        def hook(module, inp, out) -> None:  # must return None, or it would replace the layer's output
            inputs[name], outputs[name] = inp[0].detach(), out
        return hook

    hooks = [m.register_forward_hook(keep(k)) for k, m in linears.items()]
    fisher = {k: torch.zeros_like(v) for k, v in param_dict(learner.model).items()}
    seen = 0
    try:
        with in_mode(learner, False):
            for batch in samples(chunk, n):
                with torch.enable_grad():
                    t = batch.t if learner.class_mask is not None else None
                    logits = learner.loss_logits(batch.x, t)
                    loss = F.cross_entropy(logits, fisher_targets(logits, batch.y, labels), reduction="sum")
                    names = list(outputs)
                    # summed loss: row i of each output gradient is sample i's own d_i
                    grads = torch.autograd.grad(loss, [outputs[k] for k in names])
                for k, d in zip(names, grads):
                    d2, a2 = d.pow(2), inputs[k].pow(2)
                    fisher[f"{k}.weight"] += d2.T @ a2
                    if linears[k].bias is not None:
                        fisher[f"{k}.bias"] += d2.sum(0)
                seen += len(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {k: f / max(seen, 1) for k, f in fisher.items()}


def diagonal_fisher(learner: Learner, samples: TaskSamples, n: int, chunk: int,
                    labels: str = "true") -> dict[str, torch.Tensor]:
    """Mean squared per-sample gradient of the log-likelihood of the true (or predicted) label, vmap over samples."""
    fast = linear_fisher(learner, samples, n, max(chunk, 256), labels)
    if fast is not None:
        return fast
    params = {k: v.detach() for k, v in param_dict(learner.model).items()}

    def nll(p, x, y, t):
        out = learner.mask(functional_call(learner.model, p, (x.unsqueeze(0),)), None if t is None else t[None])
        out = learner.restrict(out)  # as loss_logits, on the functional model
        return F.cross_entropy(out, y.unsqueeze(0))

    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    seen = 0
    with in_mode(learner, False):  # the Fisher of the trained model, without dropout noise
        for batch in samples(chunk, n):
            t = batch.t if learner.class_mask is not None else None
            in_dims = (None, 0, 0, 0 if t is not None else None)
            with torch.no_grad():  # the true labels need no forward pass
                y = batch.y if labels == "true" else fisher_targets(learner.loss_logits(batch.x, t), batch.y, labels)
            grads = vmap(grad(nll), in_dims=in_dims)(params, batch.x, y, t)
            for k, g in grads.items():
                fisher[k] += g.pow(2).sum(0)
            seen += len(batch)
    return {k: f / max(seen, 1) for k, f in fisher.items()}


@LEARNERS.register("ewc")
class EWC(Learner):
    presentations = ("task_aware",)  # the Fisher is taken at task ends
    Config = EWCConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fishers: list[dict[str, torch.Tensor]] = []
        self.anchors: list[dict[str, torch.Tensor]] = []
        self._merged: Merged | None = None  # the pairs as one quadratic; rebuilt when they change
        # after each finished task, the largest per-weight importance the penalty sums (its curvature along the
        # stiffest weight is lam times it): what bounds a stable step size (docs/results/baselines.md, "Why EWC
        # went to chance with SGD"); a record, so the stability tables need no checkpoint
        self.fisher_peaks: list[float] | None = []

    def penalty(self):
        if not self.fishers:
            return 0.0
        if self._merged is None:
            self._merged = merge_pairs(self.fishers, self.anchors)
        params = param_dict(self.model)
        weight, centre, const = self._merged
        total = sum((weight[k] * (params[k] - centre[k]).pow(2)).sum() for k in weight)
        return 0.5 * self.method.lam * (total + const)

    def on_task_end(self, task_id: int, samples: TaskSamples) -> None:
        self._merged = None
        m = self.method
        fisher = diagonal_fisher(self, samples, m.fisher_samples, m.fisher_chunk, m.fisher_labels)
        anchor = {k: v.detach().clone() for k, v in param_dict(self.model).items()}
        if self.method.mode == "online" and self.fishers:
            fisher = {k: self.method.gamma * self.fishers[0][k] + fisher[k] for k in fisher}
            self.fishers, self.anchors = [fisher], [anchor]
        else:
            self.fishers.append(fisher)
            self.anchors.append(anchor)
        if self.fisher_peaks is not None:
            self.fisher_peaks.append(summed_peak(self.fishers))

    def get_extra_state(self) -> Any:
        return {"fishers": self.fishers, "anchors": self.anchors, "fisher_peaks": self.fisher_peaks}

    def set_extra_state(self, state: Any) -> None:
        self.fishers, self.anchors, self._merged = state["fishers"], state["anchors"], None
        # checkpoints made before the figure existed: offline EWC's are rebuilt exactly from its Fishers; online
        # EWC keeps only the running one, so the run's figure is not recorded (null) rather than misaligned
        if "fisher_peaks" in state:
            self.fisher_peaks = state["fisher_peaks"]
        elif self.method.mode == "offline":
            self.fisher_peaks = [summed_peak(self.fishers[:k + 1]) for k in range(len(self.fishers))]
        else:
            self.fisher_peaks = None if self.fishers else []

    def final_metrics(self, ctx: Any) -> dict[str, Any]:
        return {"fisher_peaks": self.fisher_peaks}

    def on_train_start(self) -> None:
        # a checkpoint restores them on the CPU: to the training device once per fit, not mixed in every step
        self.fishers, self.anchors = to_device(self.fishers, self.device), to_device(self.anchors, self.device)
        self._merged = None


Merged = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]


def summed_peak(fishers: list[dict[str, torch.Tensor]]) -> float:
    """The largest entry, over every weight, of the Fishers summed task by task (0 with none)."""
    if not fishers:
        return 0.0
    return max(float(sum(f[k] for f in fishers).max()) for k in fishers[0])


def merge_pairs(fishers: list[dict[str, torch.Tensor]], anchors: list[dict[str, torch.Tensor]]) -> Merged:
    """sum_k F_k (p - a_k)^2 as one quadratic W (p - c)^2 + const, so a step costs one term, not one per task
    (offline EWC on 10 tasks spent half its time in the penalty): W = sum_k F_k, c = sum_k F_k a_k / W (0 where
    W = 0), const = sum_k F_k (a_k - c)^2. The gradient, 2 W (p - c), is the sum's. A single pair (online EWC,
    offline after one task) is returned as it is, so its steps are the unmerged ones bit for bit. EWC keeps the
    result until its pairs change through its own hooks; code that edits `fishers` or `anchors` in place must
    set `_merged = None`. Costs two parameter-sized tensors (W, c) besides the pairs."""
    if len(fishers) == 1:
        return fishers[0], anchors[0], 0.0
    weight, centre, const = {}, {}, 0.0
    for k in fishers[0]:
        w = sum(f[k] for f in fishers)
        c = torch.where(w > 0, sum(f[k] * a[k] for f, a in zip(fishers, anchors)) / w, torch.zeros_like(w))
        weight[k], centre[k] = w, c
        const += sum((f[k] * (a[k] - c).pow(2)).sum() for f, a in zip(fishers, anchors)).item()
    return weight, centre, const
