"""TAME: task-agnostic continual learning with multiple experts (Zhu et al., arXiv 2210.03869).

Spec: docs/methods/tame.md. Per incoming batch, before any update:
  1. score every expert on the batch in eval mode, in ONE batched call (torch.func: the experts' parameters are
     stacked and the forward is vmapped over them, so the cost is one wide forward, not a loop over experts);
  2. the active expert's detector (EMA of its loss vs mean + k*std of its window) judges the loss;
  3. on a shift the active expert's detector freezes (it stops absorbing losses), the outgoing expert is pruned
     on the pruning buffer, and the learner switches to the first expert (creation order) whose detector accepts
     the batch (a recurring task) or spawns a fresh one with its own optimizer;
  4. the active expert trains on the batch (SGD 0.1 / 0.9 / 5e-4, sigmoid-bounded cross-entropy), and the batch
     enters the selector buffer (labelled with the active expert) and the pruning buffer.
At the end of the stream the active expert is pruned and the selector is trained on its buffer, then pruned.
At test time `predict(x, None)` routes each sample to one expert (hard routing).

The learner takes no task ids and no boundaries: the control flow depends on the losses alone. That control flow
needs the losses on the host, so each step reads back one small vector (all experts' losses) — one sync per
step, inherent to the method; everything else stays on the device.

Under DDP every rank takes the same decisions because it sees the same numbers: the experts' losses are summed
over the ranks' shards (one all-reduce of E+1 numbers), the buffers are filled with the gathered global batch,
the active expert's gradients are averaged by hand (experts are created during training, so Lightning's DDP
wrapper cannot hold them; see cltrain.distributed.SelfSyncDDPStrategy), and whatever a rank builds or
fine-tunes on its own (a spawned expert, a pruned one, the selector) is overwritten with rank 0's copy.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from cltrain.config import bounded, choice, count, fraction, positive
from cltrain.distributed import (all_sum, average_gradients, broadcast_module, from_rank0, gather_rows,
                                 module_digest, to_device, world_size)
from cltrain.learners import tame_report
from cltrain.learners.base import LEARNERS, Learner
from cltrain.nn.modes import in_mode
from cltrain.nn.stacked import StackedModules
from cltrain.plugins.detection import DetectorConfig, build_detector, check_can_fire
from cltrain.plugins.pruning import Masks, apply_masks, finetune, prune_and_finetune, weight_sparsity
from cltrain.priority_buffer import PriorityBuffer
from cltrain.seeding import derive_seed, generator, seeded
from cltrain.streams.loader import Batch


@dataclass
class TAMEConfig:
    # shift detection (the paper's rule by default; detector=welch swaps in the t-test of plugins/detection.py)
    detector: str = choice("ema_window", "ema_window", "welch")
    window: int = count(100, high=1_000_000)
    alpha: float = fraction(0.2, low_open=True)
    k: float = bounded(3.0, 0, 1000)
    std_floor: float = bounded(0.005, 0, 1e6)
    significance: float = fraction(1e-4, low_open=True, high_open=True)  # welch only
    # no alarm until the active expert's window holds this many losses (1: the paper)
    min_window: int = count(1, high=1_000_000)
    # experts
    lr: float = positive(0.1, high=10)
    momentum: float = fraction(0.9, high_open=True)
    weight_decay: float = fraction(5e-4)
    bounded_loss: bool = True  # detection scores experts by sigmoid outputs + cross-entropy (bounded range)
    # the loss experts train on: bounded (the paper's code) or plain cross-entropy on the logits. With a head
    # over all 10 classes (ours; the paper's split-MNIST experts have 2) bounded training saturates both seen
    # classes' sigmoids at 1 and stalls at chance (measured), so the experiments train with ce.
    train_loss: str = choice("bounded", "bounded", "ce")
    # beyond this, a shift reuses the expert with the lowest loss instead of spawning
    max_experts: int = count(64, high=100_000)
    # buffers
    selector_capacity: int = count(5000)  # C_s
    prune_capacity: int = count(6000)  # C_p
    selector_balance: str = choice("expert_class", "expert_class", "class")  # the paper's code: class
    # pruning (global L1 magnitude, then fine-tuning on the buffer)
    prune_experts: bool = True  # the reference code never prunes its experts; the paper says it does
    expert_sparsity: float = fraction(0.98, high_open=True)
    expert_prune_epochs: int = count(10, high=100_000, low=0)
    expert_prune_lr: float = positive(0.01, high=10)
    expert_prune_rounds: int = count(1, high=1000)  # 1: one-shot (the paper's code); more: gradual, same total epochs
    selector_sparsity: float = fraction(0.5, high_open=True)
    selector_prune_epochs: int = count(5, high=100_000, low=0)
    selector_prune_lr: float = positive(0.01, high=10)
    # selector
    selector_epochs: int = count(30, high=100_000)
    selector_lr: float = positive(0.1, high=10)
    eval_selector_epochs: int = count(10, high=100_000)  # temporary selectors for evaluations before the end
    batch_size: int = count(128, high=1 << 20)  # selector training and pruning fine-tuning

    def validate(self, where: str, exp: Any) -> None:
        check_can_fire(self.detector, self.window, self.min_window, DetectorConfig.recent, where)  # default recent


def bounded_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over sigmoid outputs: in [-1 + log(e + C - 1), log(1 + (C - 1) e)], so no spikes."""
    return F.cross_entropy(torch.sigmoid(logits), y, reduction=reduction)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (reporting only; the module trains on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def replace_head(model: nn.Module, n_out: int) -> nn.Module:
    """The same network with its last linear layer resized to n_out outputs (the selector over experts)."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], nn.Linear(last.in_features, n_out).to(last.weight.device))
    return model


@LEARNERS.register("tame")
class TAME(Learner):
    presentations = ("task_agnostic",)  # it detects tasks itself; given boundaries would go unused
    incompatible_plugins = {"pruning": "TAME prunes its own experts (learner.prune_experts)"}
    reports_shifts = True
    single_network = False  # experts and a selector: `cltrain merge` reads them with source=tame
    own_logits = True  # each expert's logits in its own training step
    optimizes_itself = True  # one optimizer per expert (they come and go during the fit), stepped in its training_step
    syncs_own_gradients = True  # the expert pool grows during training, outside any DDP wrapper
    Config = TAMEConfig

    def __init__(self, model: nn.Module, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        if self.model_factory is None:
            raise ValueError("TAME needs a model_factory to build experts")
        cfg: TAMEConfig = self.method
        self.model = None  # no single model: the pool below (state_dict keys experts.<i>.*)
        self.experts = nn.ModuleList([model])
        self.selector: Optional[nn.Module] = None  # the final, pruned selector (end of the stream)
        self.detector_cfg = DetectorConfig(cfg.detector, cfg.window, cfg.alpha, cfg.k, cfg.std_floor,
                                           significance=cfg.significance, min_window=cfg.min_window)
        self.init_loss = math.log(self._n_outputs(model))  # loss of a uniform C-way output (ln C)
        self.detectors = [build_detector(self.detector_cfg, self.init_loss)]
        self.masks: list[Optional[Masks]] = [None]
        self.selector_masks: Optional[Masks] = None
        self.active = 0
        self.finalized = False
        self.sel_buffer = PriorityBuffer(cfg.selector_capacity, seed=derive_seed(self.seed, "tame_selector_buffer"))
        self.prune_buffer = PriorityBuffer(cfg.prune_capacity, seed=derive_seed(self.seed, "tame_prune_buffer"))
        self.step = 0
        self.trace: dict[str, list] = {"expert": [], "loss": [], "ema": []}  # one entry per batch
        self.events: list[dict[str, Any]] = []  # shifts: {step, from, to, kind: recur|spawn}
        self.prune_log: list[dict[str, Any]] = []
        # per prune_log entry: the expert's weights just before and just after its pruning (CPU copies), so the
        # report can score each task right after its pruning and split pruning loss from later forgetting
        self.prune_snapshots: list[dict[str, dict]] = []
        self._opts: list[torch.optim.Optimizer] = []
        self._pending_opt_states: Optional[list] = None
        self._eval_selector: tuple[Any, Optional[nn.Module]] = (None, None)
        self._template: Optional[tuple[nn.Module]] = None
        self._stacked = StackedModules()  # the experts' weights for the vmapped scoring, refreshed per change
        self._trained_digest: Optional[float] = None

    @staticmethod
    def _n_outputs(model: nn.Module) -> int:
        return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features

    # ---- experts ----------------------------------------------------------------------------------------
    def expert_loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The loss the detectors see."""
        if self.method.bounded_loss:
            return bounded_cross_entropy(logits, y, reduction)
        return F.cross_entropy(logits, y, reduction=reduction)

    def train_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss experts are trained (and fine-tuned after pruning) on."""
        if self.method.train_loss == "bounded":
            return bounded_cross_entropy(logits, y)
        return F.cross_entropy(logits, y)

    def _new_optimizer(self, expert: nn.Module) -> torch.optim.Optimizer:
        c = self.method
        return torch.optim.SGD(expert.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _ensure_optimizers(self) -> None:
        """Build optimizers lazily, on the training device, restoring a checkpoint's states if pending."""
        while len(self._opts) < len(self.experts):
            self._opts.append(self._new_optimizer(self.experts[len(self._opts)]))
        if self._pending_opt_states is not None:
            for opt, state in zip(self._opts, self._pending_opt_states):
                opt.load_state_dict(state)
            self._pending_opt_states = None

    def _new_expert(self, j: int) -> nn.Module:
        """Expert j's network, initialised from (seed, "model", j) alone: not from when or where it is spawned."""
        with seeded(self.seed, "model", j):
            return self.model_factory().to(self.device)

    def _new_selector(self, n_experts: int, purpose: str) -> nn.Module:
        with seeded(self.seed, purpose, 0):
            return replace_head(self.model_factory(), n_experts)

    def _spawn(self) -> int:
        expert = self._new_expert(len(self.experts))
        broadcast_module(expert)  # DDP: rank 0's initialisation everywhere
        self.experts.append(expert)
        self._opts.append(self._new_optimizer(expert))
        self.detectors.append(build_detector(self.detector_cfg, self.init_loss))
        self.masks.append(None)
        return len(self.experts) - 1

    @torch.no_grad()
    def score_experts(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of every expert on (x, y), eval mode, one vmapped forward over the stacked experts: [E]."""
        experts = list(self.experts)
        params, buffers = self._stacked(experts)  # re-copies only the experts that changed (the active one)
        if self._template is None:  # structure only (on the meta device, in eval mode); weights come from `params`
            self._template = (copy.deepcopy(experts[0]).to("meta").eval(),)  # a tuple: not a registered submodule
        template = self._template[0]
        logits = vmap(lambda p, b: functional_call(template, (p, b), (x,)))(params, buffers)  # [E, B, C]
        losses = self.expert_loss(logits.flatten(0, 1), y.repeat(len(experts)), reduction="none")
        return losses.view(len(experts), -1).mean(1)

    def global_scores(self, x: torch.Tensor, y: torch.Tensor,
                      experts: Optional[list[int]] = None) -> tuple[list[float], int]:
        """Mean losses of the experts (all, or those listed) on the global batch, and its row count.

        Single process: the local batch is the global one. DDP: per-rank sums and row counts are added up in
        one all-reduce, so every rank gets the same numbers (and takes the same decisions on them).
        """
        local = self.score_experts(x, y) if experts is None else \
            torch.tensor([self._loss_of(j, x, y) for j in experts], device=x.device)
        if world_size() == 1:
            return local.tolist(), len(y)
        total = all_sum(torch.cat([local.double() * len(y), local.new_tensor([len(y)], dtype=torch.float64)]))
        return (total[:-1] / total[-1]).tolist(), int(total[-1])

    @torch.no_grad()
    def _loss_of(self, j: int, x: torch.Tensor, y: torch.Tensor) -> float:
        with in_mode(self.experts[j], False) as expert:
            return float(self.expert_loss(expert(x), y))

    def score_experts_loop(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The same, one expert at a time (the reference code's way; kept to test the batched version)."""
        return torch.tensor([self._loss_of(j, x, y) for j in range(len(self.experts))])

    # ---- the step ---------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return None  # manual optimization: one optimizer per expert, created with the expert

    def on_train_start(self) -> None:
        # once per fit: restored masks arrive on the CPU; apply_masks runs after every step
        self.masks = to_device(self.masks, self.device)
        self.selector_masks = to_device(self.selector_masks, self.device)
        self.sel_buffer.to(self.device)
        self.prune_buffer.to(self.device)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        self._ensure_optimizers()
        x, y = batch.x, batch.y
        losses, rows = self.global_scores(x, y)  # the one host read-back of the step
        shift = self.detectors[self.active].fires(losses[self.active])
        if shift:
            loss = self._on_shift(losses, x, y)
        else:
            loss = losses[self.active]
        self.detectors[self.active].observe(loss)
        self._train_active(x, y, len(y) / rows)
        self._fill_buffers(batch)
        self._record(loss)
        self.step += 1
        if batch_idx + 1 == self.trainer.num_training_batches:
            # DDP check: the experts as trained, before _finalize's broadcasts would hide any disagreement
            self._trained_digest = module_digest(self.experts)
            self._finalize()  # the stream ended (not a task boundary: there is no more data at all)
        # on the module's device: the detection plugin all-reduces it under DDP (NCCL takes no CPU tensors)
        return {"loss": torch.tensor(loss, device=self.device), "shift": shift}

    def _on_shift(self, losses: list[float], x: torch.Tensor, y: torch.Tensor) -> float:
        """Switch to a returning expert or spawn one; returns the new active expert's loss on the batch."""
        old = self.active
        self._prune_expert(old)
        self.prune_buffer.clear()  # it must hold the incoming task's samples only
        candidates = [j for j in range(len(self.experts)) if j != old and self.detectors[j].accepts(losses[j])]
        if candidates:
            self.active, kind = candidates[0], "recur"
        elif len(self.experts) < self.method.max_experts:
            self.active, kind = self._spawn(), "spawn"
            losses = losses + self.global_scores(x, y, [self.active])[0]
        else:
            self.active, kind = int(np.argmin(losses)), "reuse"
        self.events.append({"step": self.step, "from": old, "to": self.active, "kind": kind})
        return losses[self.active]

    def _train_active(self, x: torch.Tensor, y: torch.Tensor, share: float) -> None:
        """One step of the active expert; `share`: this rank's fraction of the global batch's rows."""
        expert, opt = self.experts[self.active], self._opts[self.active]
        expert.train()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(self.train_loss(expert(x), y))
        average_gradients(list(expert.parameters()), share)
        opt.step()
        apply_masks(expert, self.masks[self.active])  # a pruned expert that trains again stays sparse

    def _fill_buffers(self, batch: Batch) -> None:
        # DDP: every rank adds the same gathered global batch, so the buffers (and what is trained on them) agree
        x, y, _ = gather_rows(self.trainer, batch.x[: batch.n_new], batch.y[: batch.n_new], None, batch.n_global)
        expert = torch.full_like(y, self.active)
        n_out = self._n_outputs(self.experts[0])
        group = expert * n_out + y if self.method.selector_balance == "expert_class" else y
        self.sel_buffer.add(x, y, group, tag=expert)
        self.prune_buffer.add(x, y, torch.zeros_like(y))

    def _record(self, loss: float) -> None:
        self.trace["expert"].append(self.active)
        self.trace["loss"].append(loss)
        self.trace["ema"].append(getattr(self.detectors[self.active], "ema", None))

    # ---- pruning and the selector -----------------------------------------------------------------------
    def _prune_expert(self, j: int) -> None:
        c = self.method
        if not c.prune_experts or len(self.prune_buffer) == 0:
            return
        x, y, _ = self.prune_buffer.contents()
        seed = derive_seed(self.seed, "tame_prune", len(self.prune_log))
        before = self._buffer_loss(j, x, y)
        dense = snapshot(self.experts[j])
        self.masks[j] = prune_and_finetune(self.experts[j], x, y, c.expert_sparsity, c.expert_prune_epochs,
                                           c.expert_prune_lr, c.batch_size, seed, loss_fn=self.train_loss,
                                           rounds=c.expert_prune_rounds)
        broadcast_module(self.experts[j])
        self._stacked.invalidate()  # the broadcast writes through .data, which no version counter sees
        self.prune_snapshots.append({"dense": dense, "pruned": snapshot(self.experts[j])})
        after = self._buffer_loss(j, x, y)
        # The frozen threshold was measured on the dense expert; a returning task is judged on the pruned one.
        self.detectors[j].rebase(from_rank0(after - before, self.device))
        self._opts[j] = self._new_optimizer(self.experts[j])  # stale momentum would push pruned weights back
        self.prune_log.append({"step": self.step, "expert": j, "samples": len(y), "loss_before": before,
                               "loss_after": after, "weight_sparsity": weight_sparsity(self.experts[j])})

    @torch.no_grad()
    def _buffer_loss(self, j: int, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> float:
        with in_mode(self.experts[j], False) as expert:
            total = sum(float(self.expert_loss(expert(x[i:i + chunk]), y[i:i + chunk], reduction="sum"))
                        for i in range(0, len(y), chunk))
        return total / max(len(y), 1)

    def _train_selector(self, epochs: int, sparsity: float,
                        purpose: str) -> tuple[Optional[nn.Module], Optional[Masks]]:
        """A selector over the current experts, trained on the selector buffer (None with a single expert).

        Its initialisation (0), shuffling (1) and pruning (2) draw from seeds of their own (seeding, `purpose`),
        so training one never moves the global RNG, and nothing else moves its draws.
        """
        if len(self.experts) < 2 or len(self.sel_buffer) == 0:
            return None, None
        c = self.method
        x, _, tag = self.sel_buffer.contents()
        selector = self._new_selector(len(self.experts), purpose).to(x.device)
        gen = generator(self.seed, purpose, 1)
        finetune(selector, x, tag, None, epochs, c.selector_lr, c.batch_size, gen,
                 momentum=c.momentum, weight_decay=c.weight_decay)
        masks = None
        if sparsity > 0:
            masks = prune_and_finetune(selector, x, tag, sparsity, c.selector_prune_epochs, c.selector_prune_lr,
                                       c.batch_size, derive_seed(self.seed, purpose, 2))
        selector.eval()
        return selector, masks

    def _finalize(self) -> None:
        self._prune_expert(self.active)
        self.selector, self.selector_masks = self._train_selector(self.method.selector_epochs,
                                                                  self.method.selector_sparsity, "tame_selector")
        if self.selector is not None:
            broadcast_module(self.selector)
        self.finalized = True

    def current_selector(self) -> Optional[nn.Module]:
        """The final selector, or (evaluations before the stream's end) a temporary one for the current pool."""
        if self.finalized or len(self.experts) < 2:
            return self.selector
        key = (len(self.experts), self.sel_buffer.seen)
        if self._eval_selector[0] != key:
            selector, _ = self._train_selector(self.method.eval_selector_epochs, 0.0, "tame_eval_selector")
            self._eval_selector = (key, selector)
        return self._eval_selector[1]

    # ---- inference --------------------------------------------------------------------------------------
    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        selector = self.current_selector()
        if selector is None:
            return torch.zeros(len(x), dtype=torch.long, device=x.device)
        selector.eval()
        return selector(x).argmax(1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        return self.predict_routed(x)[0]

    @torch.no_grad()
    def predict_routed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class predictions, expert chosen per sample). Each sample goes through its one expert only, so the
        cost is one forward per sample whatever the pool size (the loop is over experts, not samples)."""
        routes = self.route(x)
        preds = torch.empty_like(routes)
        for j in torch.unique(routes).tolist():
            rows = torch.nonzero(routes == j, as_tuple=True)[0]
            with in_mode(self.experts[j], False) as expert:
                preds[rows] = expert(x[rows]).argmax(1)
        return preds, routes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts[self.active](x)

    # ---- checkpointing ----------------------------------------------------------------------------------
    def get_extra_state(self) -> Any:
        return {
            "n_experts": len(self.experts), "selector_out": None if self.selector is None else len(self.experts),
            "detectors": [d.state_dict() for d in self.detectors], "masks": self.masks,
            "selector_masks": self.selector_masks, "active": self.active, "finalized": self.finalized,
            "sel_buffer": self.sel_buffer.state_dict(), "prune_buffer": self.prune_buffer.state_dict(),
            "step": self.step, "trace": self.trace, "events": self.events, "prune_log": self.prune_log,
            "prune_snapshots": self.prune_snapshots,
        }

    def _grow_to(self, extra: dict) -> None:
        """Make the module tree match a saved one (more experts, a selector) so its weights can load."""
        while len(self.experts) < extra["n_experts"]:
            self.experts.append(self._new_expert(len(self.experts)))
            self.detectors.append(build_detector(self.detector_cfg, self.init_loss))
            self.masks.append(None)
        if extra["selector_out"] is not None and self.selector is None:
            self.selector = self._new_selector(extra["selector_out"], "tame_selector").to(self.device)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        extra = state_dict.get("_extra_state")
        if extra is not None:
            self._grow_to(extra)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def set_extra_state(self, state: Any) -> None:
        self._grow_to(state)
        for det, s in zip(self.detectors, state["detectors"]):
            det.load_state_dict(s)
        self.masks, self.selector_masks = list(state["masks"]), state["selector_masks"]
        self.active, self.finalized, self.step = state["active"], state["finalized"], state["step"]
        self.sel_buffer.load_state_dict(state["sel_buffer"])
        self.prune_buffer.load_state_dict(state["prune_buffer"])
        self.trace = {k: list(v) for k, v in state["trace"].items()}
        self.events, self.prune_log = list(state["events"]), list(state["prune_log"])
        self.prune_snapshots = list(state.get("prune_snapshots", []))  # checkpoints from before it
        self._opts = []  # rebuilt lazily for the restored pool (load_optimizer_state supplies their states)
        self._eval_selector = (None, None)

    def optimizer_state(self) -> Optional[dict]:
        if self._pending_opt_states is not None:
            return {"experts": self._pending_opt_states}
        return {"experts": [opt.state_dict() for opt in self._opts]}

    def load_optimizer_state(self, state: Optional[dict]) -> None:
        self._opts = []
        self._pending_opt_states = None if not state else list(state["experts"])

    # ---- reporting (cltrain/learners/tame_report.py) ---------------------------------------------------------
    def final_metrics(self, ctx) -> dict[str, Any]:
        return tame_report.final_metrics(self, ctx)
