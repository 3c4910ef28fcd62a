"""Preference-weighted training: the baselines IBCL is compared with, one trained model per preference.

`learner.preference` gives a weight per task id (the point of the simplex the model is trained for); every
sample's loss is multiplied by its task's weight. `pref_weighted` is a plain network (with the `replay` plugin:
the rehearsal baseline); `pref_vcl` is Bayesian fine-tuning in the style of VCL (one posterior, the previous
task's posterior as the prior, ELBO = weighted NLL + KL / N). Training one model per preference is the cost
IBCL avoids: metrics.json's `cost` counts the models and gradient steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from cltrain.config import bad, fraction, positive
from cltrain.learners.base import LEARNERS, FinalContext, Learner
from cltrain.learners.ibcl import check_bayes_head, to_labels
from cltrain.nn.bayes import BayesMLP


def check_preference(exp: Any, preference: list[float], where: str) -> None:
    """One weight per task id, summing to 1 (each weight's range is declared on the field)."""
    n = exp.stream.n_tasks
    if len(preference) != n or abs(sum(preference) - 1) > 1e-6:
        raise bad(f"{where}preference", preference, f"{n} numbers >= 0 summing to 1 (one weight per task id, "
                  f"stream.n_tasks={n})")


def _cost(ctx: FinalContext, method: str) -> dict[str, Any]:
    return {"cost": {method: {"trained_models": 1, "gradient_steps": int(ctx.phase_end_steps[-1]),
                              "models_trained_per_preference": 1}}}


@dataclass
class PrefWeightedConfig:
    preference: list[float] = fraction([])  # weight per task id; required

    def validate(self, where: str, exp: Any) -> None:
        check_preference(exp, self.preference, where)


@LEARNERS.register("pref_weighted")
class PrefWeighted(Learner):
    Config = PrefWeightedConfig
    presentations = ("task_aware",)  # a preference weights samples by their task

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weights", torch.tensor(self.method.preference, dtype=torch.float32), persistent=False)

    def loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        return (self.weights[batch.t] * F.cross_entropy(logits, batch.y, reduction="none")).mean()

    def final_metrics(self, ctx: FinalContext) -> dict[str, Any]:
        return _cost(ctx, "pref_weighted")


@dataclass
class PrefVCLConfig:
    preference: list[float] = fraction([])  # weight per task id; required
    prior_scale: float = positive(0.25, high=1e3)  # the first task's prior N(0, s^2)
    sigma_init: float = positive(0.05, high=1e3)

    def validate(self, where: str, exp: Any) -> None:
        check_preference(exp, self.preference, where)
        check_bayes_head(exp, "VCL")


@LEARNERS.register("pref_vcl")
class PrefVCL(Learner):
    Config = PrefVCLConfig
    own_logits = True  # its step samples the Bayesian head itself
    presentations = ("task_aware",)  # a preference weights samples by their task

    def __init__(self, model: BayesMLP, optim, method: PrefVCLConfig, class_mask=None, model_factory=None, seed: int = 0):
        head = BayesMLP(model.dims[0], model.dims[1:-1], model.dims[-1], [method.prior_scale], method.sigma_init)
        super().__init__(head, optim, method, class_mask, None, seed=seed)
        self.register_buffer("weights", torch.tensor(method.preference, dtype=torch.float32), persistent=False)
        self.n_train = 1

    def on_train_start(self) -> None:
        segments = getattr(self.trainer.train_dataloader, "segments", None)
        self.n_train = int(segments[0].idx.numel()) if segments else 1

    def step_outputs(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self.model(batch.x)  # [1, B, out]
        if logits.shape[-1] == 1:
            nll = F.binary_cross_entropy_with_logits(logits[0, :, 0], batch.y.float(), reduction="none")
        else:
            nll = F.cross_entropy(logits[0], batch.y, reduction="none")
        loss = (self.weights[batch.t] * nll).mean() + self.model.kl()[0] / self.n_train
        self.log_loss(loss, batch, batch_idx)
        return {"loss": loss}

    def on_task_end(self, task_id: int, samples) -> None:
        self.model.set_prior(*self.model.posterior())  # detached copies

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        return to_labels(self.model(x, sample=False)[0])

    def final_metrics(self, ctx: FinalContext) -> dict[str, Any]:
        return _cost(ctx, "vcl")
