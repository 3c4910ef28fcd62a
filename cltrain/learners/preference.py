"""Preference-weighted training: the baselines IBCL is compared with, one trained model per preference.

`learner.preference` gives a weight per task id (the point of the simplex the model is trained for); every
sample's loss is multiplied by its task's weight. `pref_weighted` is a plain network (with the `replay` plugin:
the rehearsal baseline); `pref_vcl` is Bayesian fine-tuning in the style of VCL (one posterior, the previous
task's posterior as the prior, ELBO = weighted NLL + KL / N). Training one model per preference is the cost
IBCL avoids: metrics.json's `cost` counts the models and gradient steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F

from cltrain.errors import ConfigError
from cltrain.learners.base import LEARNERS, FinalContext, Learner
from cltrain.learners.ibcl import to_labels
from cltrain.nn.bayes import BayesMLP


def check_preference(cfg, preference: list[float]) -> None:
    n = cfg.stream.n_tasks
    ok = len(preference) == n and all(math.isfinite(v) and v >= 0 for v in preference)
    if not ok or abs(sum(preference) - 1) > 1e-6:
        raise ConfigError(f"bad value {preference!r} for 'learner.preference'; valid: {n} numbers >= 0 summing to 1 "
                          f"(one weight per task id, stream.n_tasks={n})")
    if cfg.stream.presentation != "task_aware":
        raise ConfigError(f"bad value {cfg.stream.presentation!r} for 'stream.presentation'; valid: task_aware "
                          f"(a preference weights samples by their task)")


def _cost(ctx: FinalContext, method: str) -> dict[str, Any]:
    return {"cost": {method: {"trained_models": 1, "gradient_steps": int(ctx.phase_end_steps[-1]),
                              "models_trained_per_preference": 1}}}


@dataclass
class PrefWeightedConfig:
    preference: list[float] = field(default_factory=list)  # weight per task id; required


@LEARNERS.register("pref_weighted")
class PrefWeighted(Learner):
    Config = PrefWeightedConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weights", torch.tensor(self.method.preference, dtype=torch.float32), persistent=False)

    @classmethod
    def check_config(cls, cfg, method: PrefWeightedConfig) -> None:
        check_preference(cfg, method.preference)

    def loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        return (self.weights[batch.t] * F.cross_entropy(logits, batch.y, reduction="none")).mean()

    def final_metrics(self, ctx: FinalContext) -> dict[str, Any]:
        return _cost(ctx, "pref_weighted")


@dataclass
class PrefVCLConfig:
    preference: list[float] = field(default_factory=list)  # weight per task id; required
    prior_scale: float = 0.25  # the first task's prior N(0, s^2)
    sigma_init: float = 0.05


@LEARNERS.register("pref_vcl")
class PrefVCL(Learner):
    Config = PrefVCLConfig

    def __init__(self, model: BayesMLP, optim, method: PrefVCLConfig, class_mask=None, model_factory=None):
        head = BayesMLP(model.dims[0], model.dims[1:-1], model.dims[-1], [method.prior_scale], method.sigma_init)
        super().__init__(head, optim, method, class_mask, None)
        self.register_buffer("weights", torch.tensor(method.preference, dtype=torch.float32), persistent=False)
        self.n_train = 1

    @classmethod
    def check_config(cls, cfg, method: PrefVCLConfig) -> None:
        check_preference(cfg, method.preference)
        if cfg.model.name != "bayes_mlp":
            raise ConfigError(f"bad value {cfg.model.name!r} for 'model.name'; valid: bayes_mlp (VCL's Bayesian head)")
        if method.prior_scale <= 0 or method.sigma_init <= 0:
            raise ConfigError(f"bad value for 'learner.prior_scale' / 'learner.sigma_init' "
                              f"({method.prior_scale}, {method.sigma_init}); valid: numbers > 0")

    def on_train_start(self) -> None:
        segments = getattr(self.trainer.train_dataloader, "segments", None)
        self.n_train = int(segments[0].idx.numel()) if segments else 1

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self.model(batch.x)  # [1, B, out]
        if logits.shape[-1] == 1:
            nll = F.binary_cross_entropy_with_logits(logits[0, :, 0], batch.y.float(), reduction="none")
        else:
            nll = F.cross_entropy(logits[0], batch.y, reduction="none")
        loss = (self.weights[batch.t] * nll).mean() + self.model.kl()[0] / self.n_train
        if self.trainer is not None and batch_idx % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch))
        return {"loss": loss}

    def on_task_end(self, task_id: int, samples) -> None:
        self.model.set_prior(*self.model.posterior())  # detached copies

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        return to_labels(self.model(x, sample=False)[0])

    def final_metrics(self, ctx: FinalContext) -> dict[str, Any]:
        return _cost(ctx, "vcl")
