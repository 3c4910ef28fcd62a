"""Global L1 magnitude pruning of all conv/linear weights, then fine-tuning on a buffer.

`prune_and_finetune(model, x, y, sparsity, ...)` is the routine (TAME calls it for its experts at 98% and its
selector at 50%); masks are returned and kept by the caller, and `apply_masks` re-zeroes pruned weights
after any later optimizer step (momentum and weight decay would otherwise revive them). Pruning is made
permanent (torch's reparametrisation removed) so the pruned network is a plain module again: it can be
stacked with torch.func, saved and loaded like any other.

The `pruning` plugin does this for any learner: it keeps a reservoir of the stream and prunes the learner's
`model` after each task (task-aware streams) or at the end of the stream (task-agnostic), before that
phase's evaluation, and keeps the masks applied while training continues.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from cltrain.buffers import ReservoirBuffer
from cltrain.config import bad, choice, count, fraction, positive
from cltrain.distributed import gather_rows, to_device
from cltrain.nn.modes import in_mode
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext
from cltrain.seeding import derive_seed

Masks = dict[str, torch.Tensor]  # parameter name -> bool mask (True: kept)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))]


def global_magnitude_prune(model: nn.Module, sparsity: float) -> Masks:
    """Zero the smallest-|w| fraction `sparsity` of all conv/linear weights together; return the masks."""
    layers = prunable(model)
    prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                              amount=sparsity)
    masks = {f"{name}.weight" if name else "weight": m.weight_mask.detach().bool().clone() for name, m in layers}
    for _, m in layers:
        prune.remove(m, "weight")  # bake the zeros in; the masks live on outside the module
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Optional[Masks]) -> None:
    if not masks:
        return
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return total, nonzero


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the conv/linear weights (what the target sparsity is about)."""
    weights = [m.weight.detach() for _, m in prunable(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(sum(w.numel() for w in weights), 1)


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: Optional[Masks], epochs: int, lr: float,
             batch_size: int, generator: torch.Generator, loss_fn: LossFn = F.cross_entropy,
             momentum: float = 0.9, weight_decay: float = 5e-4) -> None:
    """SGD on (x, y) for some epochs with the masks re-applied after every step."""
    if epochs <= 0 or len(y) == 0:
        return
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    with in_mode(model, True):
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=generator).to(y.device)
            for start in range(0, len(y), batch_size):
                rows = perm[start:start + batch_size]
                opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    loss_fn(model(x[rows]), y[rows]).backward()
                opt.step()
                apply_masks(model, masks)


def sparsity_schedule(target: float, rounds: int) -> list[float]:
    """Sparsities of `rounds` pruning rounds ending at `target`, each removing the same fraction of survivors."""
    keep = (1.0 - target) ** (1.0 / rounds)
    return [1.0 - keep ** (r + 1) for r in range(rounds - 1)] + [target]  # the last round hits target exactly


def prune_and_finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsity: float, epochs: int,
                       lr: float, batch_size: int = 128, seed: int = 0, loss_fn: LossFn = F.cross_entropy,
                       rounds: int = 1) -> Masks:
    """Prune to `sparsity` in `rounds` rounds (one-shot by default), fine-tuning epochs/rounds after each."""
    gen = torch.Generator().manual_seed(seed)
    masks: Masks = {}
    per_round = [epochs // rounds + (1 if r < epochs % rounds else 0) for r in range(rounds)]
    for target, n_epochs in zip(sparsity_schedule(sparsity, rounds), per_round):
        # Global pruning of a model whose pruned weights are exactly 0 keeps them pruned (smallest |w| first).
        masks = global_magnitude_prune(model, target)
        finetune(model, x, y, masks, n_epochs, lr, batch_size, gen, loss_fn)
    return masks


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    with in_mode(model, False):
        correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                      for i in range(0, len(y), batch_size))
    return correct / max(len(y), 1)


# ---- the plugin -----------------------------------------------------------------------------------------
@dataclass
class PruningConfig:
    sparsity: float = fraction(0.5, high_open=True)  # fraction of conv/linear weights set to zero
    when: str = choice("auto", "auto", "task_end", "stream_end")  # auto: task_end if task-aware, else stream_end
    capacity: int = count(2000)  # reservoir of the stream used for fine-tuning after pruning
    epochs: int = count(3, high=100_000)  # fine-tuning epochs over the buffer
    lr: float = positive(0.01, high=10)
    batch_size: int = count(128, high=1 << 20)

    def validate(self, where: str, exp: Any) -> None:
        if self.when == "task_end" and exp.stream.presentation == "task_agnostic":  # no task ends are signalled
            raise bad(f"{where}when", self.when, "auto or stream_end on a task_agnostic stream (task_end never fires)")


@PLUGINS.register("pruning")
class Pruning(Plugin):
    """Prunes `learner.model`; fine-tunes it on a reservoir of the stream (plain cross-entropy on its logits)."""

    Config = PruningConfig
    name = "pruning"

    def __init__(self, cfg: PruningConfig, ctx: PluginContext):
        super().__init__(cfg, ctx)
        self.buffer = ReservoirBuffer(cfg.capacity, seed=derive_seed(ctx.seed, "pruning_buffer"))
        self.masks: Optional[Masks] = None
        self.n_pruned = 0
        self.buffer_acc: dict[str, float] = {}
        self._learner = None  # seen in the first hook; final_metrics counts its parameters

    def _model(self, learner) -> nn.Module:
        self._learner = learner
        if not isinstance(getattr(learner, "model", None), nn.Module):
            raise TypeError(f"the pruning plugin prunes learner.model; {type(learner).__name__} has none "
                            "(TAME prunes its experts itself)")
        return learner.model

    def on_train_start(self, trainer, pl_module) -> None:
        # once per fit: restored masks and buffer arrive on the CPU, and apply_masks runs every step
        self.masks = to_device(self.masks, pl_module.device)
        self.buffer.to(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch, batch_idx: int) -> None:
        apply_masks(self._model(pl_module), self.masks)  # after the optimizer step: pruned weights stay zero
        new = slice(0, batch.n_new)
        # Every DDP rank adds the same gathered global batch: identical buffers, so the fine-tuning after
        # pruning (outside DDP's gradient sync) leaves identical weights on every rank.
        x, y, t = gather_rows(trainer, batch.x[new], batch.y[new], batch.t[new] if batch.t is not None else None,
                              batch.n_global)
        self.buffer.add(x, y, t)
        when = self.cfg.when if self.cfg.when != "auto" else ("task_end" if batch.t is not None else "stream_end")
        if when == "stream_end" and batch_idx + 1 == trainer.num_training_batches:
            self.prune(pl_module)  # the plugin runs before the trainer's own callback evaluates the phase

    def on_task_end(self, learner, task_id: int) -> None:
        if self.cfg.when in ("auto", "task_end"):
            self.prune(learner)

    def prune(self, learner) -> None:
        model = self._model(learner)
        x, y = self.buffer.x[: len(self.buffer)], self.buffer.y[: len(self.buffer)]
        before = accuracy(model, x, y)
        self.masks = prune_and_finetune(model, x, y, self.cfg.sparsity, self.cfg.epochs, self.cfg.lr,
                                        self.cfg.batch_size,
                                        seed=derive_seed(self.ctx.seed, "pruning_finetune", self.n_pruned))
        self.n_pruned += 1
        self.buffer_acc = {"pruning_buffer_acc_before": before, "pruning_buffer_acc_after": accuracy(model, x, y)}

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict(), "masks": self.masks, "n_pruned": self.n_pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.buffer.load_state_dict(state["buffer"])
            self.masks, self.n_pruned = state["masks"], state["n_pruned"]

    def final_metrics(self, ctx) -> dict[str, Any]:
        out: dict[str, Any] = {"n_pruned": self.n_pruned, "pruning_target_sparsity": self.cfg.sparsity,
                               **self.buffer_acc}
        if self._learner is not None:
            total, nonzero = count_params(self._learner.model)
            out.update(total_params=total, nonzero_params=nonzero,
                       weight_sparsity=weight_sparsity(self._learner.model))
        return out
