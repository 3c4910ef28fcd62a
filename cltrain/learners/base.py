"""The Learner: a LightningModule implementing one continual-learning method.

The trainer calls `on_task_start` / `on_task_end` at task boundaries in task-aware streams (never in
task-agnostic ones) and `predict` for evaluation. Methods add a loss term (`penalty`), change the loss
(`loss`), or use the hooks; everything else (optimizer across phases, task-incremental masking, logging)
lives here once.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Optional, Protocol

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from cltrain.config import OptimConfig
from cltrain.registry import Registry
from cltrain.streams.base import Stream
from cltrain.streams.loader import Batch


class TaskSamples(Protocol):
    """The `samples` argument of `on_task_end`: batches of a seeded subset of one task's rows.

    `samples(batch_size, max_samples)` reads the task's training data; `split="val"` reads its held-out
    validation split instead (stream.val_fraction > 0; no rows otherwise), for methods that choose
    coefficients on data never trained on (the merge learner's lam, AdaMerging's inputs).
    """

    def __call__(self, batch_size: int, max_samples: int, split: str = "train") -> Iterable[Batch]: ...


OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], OptimConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
}


class Learner(pl.LightningModule):
    Config: ClassVar[Optional[type]] = None  # the method's typed options (the `learner:` section)
    schedule: ClassVar[Optional[str]] = None  # a rehearsal schedule the method requires (joint training)
    # True: the learner all-reduces its own gradients (cltrain.distributed), so under DDP the trainer runs it
    # without Lightning's DistributedDataParallel wrapper (a module set that grows while training cannot be
    # wrapped once). Only plain `ddp` offers that, so other multi-process strategies are refused at config time.
    syncs_own_gradients: ClassVar[bool] = False
    presentations: ClassVar[tuple[str, ...]] = ("task_aware", "task_agnostic")  # stream.presentation values it supports
    incompatible_plugins: ClassVar[dict[str, str]] = {}  # plugin name -> why the two cannot run together
    reports_shifts: ClassVar[bool] = False  # its training_step returns outputs["shift"] (its own task-shift decisions)
    # True: `self.model` holds everything it predicts with (trainer.keep_phase_weights saves its weights after each
    # phase); False: part of it lives elsewhere (TAME's expert pool, L2M's / L2P's pools and prompts)
    single_network: ClassVar[bool] = True
    # True: it writes its own training_step and steps its own optimizers by hand, so optim.grad_clip_norm never
    # reaches them (the config check refuses the key for it)
    optimizes_itself: ClassVar[bool] = False
    # True: its loss does not go through `logits` (its own step or logits), so stream.active_classes=seen, which
    # narrows those logits, would not reach it (the config check refuses the key for it)
    own_logits: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        keep_signature(cls.__dict__.get("training_step"))
        check_overrides(cls)

    def __init__(self, model: nn.Module, optim: OptimConfig, method: Any = None,
                 class_mask: Optional[torch.Tensor] = None, model_factory: Optional[Callable[[], nn.Module]] = None,
                 seed: int = 0):
        super().__init__()
        self.model = model
        # builds a fresh network of the configured kind (expert pools); wrap calls in seeding.seeded(seed, ...)
        self.model_factory = model_factory
        self.seed = seed  # the run's seed: derive a generator per random purpose from it (cltrain.seeding)
        self.optim_cfg = optim
        self.method = method
        # Task-incremental streams: logits outside the task's classes are masked when the task id is known.
        self.register_buffer("class_mask", class_mask, persistent=False)
        # stream.active_classes=seen: the classes met so far, set by the trainer at every phase (None: every class)
        self.register_buffer("seen_classes", None, persistent=False)
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._pending_optimizer_state: Optional[dict] = None
        self.bar_metrics: dict[str, float] = {}  # what the progress bar shows (cltrain.progress.LearnerBar)
        # training_step takes the optimizer step itself (Lightning's manual optimization): the automatic loop wraps
        # every step in a closure and three more hook rounds, ~75 µs a step of host work on a 2-core CPU
        # (scripts/bench_step_overhead.py, docs/benchmarks.md), as much as a small network's whole step on a GPU.
        self.automatic_optimization = False

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` before and after every hook it calls (~40 times a training step).
        # nn.Module.__setattr__ first checks the value and the name against its parameter, module and buffer
        # tables (~10 isinstance calls); a hook name is none of those, so it goes straight to the instance.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are made on the training device (the stream's arrays live there); a `Batch` is no collection
        Lightning could move either, so its default walk through the batch would return it unchanged."""
        return batch

    # ---- model ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def logits(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        return self.mask(self(x), t)

    def mask(self, out: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        if self.class_mask is None or t is None:
            return out
        return out.masked_fill(~self.class_mask[t], float("-inf"))

    def loss_logits(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        """The logits the training loss sees (and what a method derives from that loss, e.g. EWC's Fisher)."""
        return self.restrict(self.logits(x, t))

    def restrict(self, out: torch.Tensor) -> torch.Tensor:
        """stream.active_classes=seen: the classes of tasks not met yet leave the softmax (-inf logits, so they get
        neither probability nor gradient), as van de Ven & Tolias train Class-IL."""
        if self.seen_classes is None:
            return out
        return out.masked_fill(~self.seen_classes, float("-inf"))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        """Class predictions; `t` is None when the method must infer the task itself. Among every class the task
        allows, also under stream.active_classes=seen (`restrict` narrows the training loss only)."""
        return self.logits(x, t).argmax(dim=1)

    # ---- training -------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits, batch.y)

    def penalty(self) -> torch.Tensor | float:
        """A regulariser added to the loss (EWC, SI, ...)."""
        return 0.0

    def step_outputs(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """One training batch's loss ("loss", with its graph) and what the callbacks' on_train_batch_end gets beside
        it (here the logits: training accuracy for facilitation). Methods with another objective override this."""
        logits = self.loss_logits(batch.x, batch.t)
        loss = self.loss(logits, batch) + self.penalty()
        self.log_loss(loss, batch, batch_idx)
        return {"loss": loss, "logits": logits.detach()}

    def log_loss(self, loss: torch.Tensor, batch: Batch, batch_idx: int) -> None:
        """`train/loss` for the loggers, on the steps Lightning writes them alone (see `writes_logs`): self.log costs
        ~0.7 ms a call (Lightning moves its result objects around). The progress bar gets a float read back on those
        steps, not `prog_bar=True`, with which Lightning reads the value back from the device at every batch end: a
        GPU synchronisation per step (cltrain/progress.py)."""
        writes = self.writes_logs()
        if writes:
            self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(batch))
        bar = self._trainer.progress_bar_callback if self._trainer is not None else None
        # Also a phase's first batch, so that a phase shorter than log_every_n_steps shows a loss; under DDP only
        # rank 0's bar is enabled, and the others need no read-back.
        if bar is not None and bar.is_enabled and (writes or batch_idx == 0):
            self.bar_metrics["train/loss"] = float(loss.detach())

    def writes_logs(self) -> bool:
        """Whether Lightning writes the loggers at this training batch's end: every log_every_n_steps batches of
        the run, counted across phases. A value logged on another step would be written at the next such step,
        up to 49 steps stale under that step's label. False outside a Lightning fit."""
        return self._trainer is not None and self._trainer._logger_connector.should_update_logs

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The step Lightning's automatic loop would take, in its order: loss, zero_grad, backward, step. Through
        Lightning's optimizer wrapper and manual_backward, so mixed precision's scaling and the backward and
        optimizer hooks (callbacks', before_update, the clipping) run as they did."""
        outputs = self.step_outputs(batch, batch_idx)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(outputs["loss"])
        optimizer.step()
        return outputs

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Lightning calls this once the step's gradients are ready (unscaled under 16-mixed), after the callbacks'
        own on_before_optimizer_step and before the update: the method's look at them first, then the clipping,
        the order Lightning's automatic loop had."""
        self.before_update(optimizer)
        self.clip_gradients_to_norm(optimizer)

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        """The step's gradients, before clipping and before the update (SI reads them here)."""

    def clip_gradients_to_norm(self, optimizer: torch.optim.Optimizer) -> None:
        """optim.grad_clip_norm: clip by the global L2 norm as Lightning's gradient_clip_val would, and log the norm
        before clipping on the log steps (`train/grad_norm` in logs/), so a run shows how often the cap acted
        rather than only that it was set."""
        cap = self.optim_cfg.grad_clip_norm
        if cap is None or self.optimizes_itself:
            return
        params = list(self.trainer.precision_plugin.main_params(optimizer))
        norm = torch.nn.utils.clip_grad_norm_(params, cap)
        if self.writes_logs():
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # One optimizer object for the whole run (or per task, if configured), not one per Lightning fit:
        # a plain PyTorch loop keeps its Adam/momentum state across tasks, and so do we.
        if self._optimizer is None:
            self._optimizer = OPTIMIZERS[self.optim_cfg.name](self.optimizer_groups(), self.optim_cfg)
            if self._pending_optimizer_state is not None:
                self._optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
        return self._optimizer

    def optimizer_groups(self) -> Any:
        """What the optimizer updates: every parameter at optim.lr, unless a method gives some their own group."""
        return self.parameters()

    def optimizer_state(self) -> Optional[dict]:
        return self._optimizer.state_dict() if self._optimizer is not None else self._pending_optimizer_state

    def load_optimizer_state(self, state: Optional[dict]) -> None:
        self._optimizer, self._pending_optimizer_state = None, state

    # ---- continual hooks (task-aware streams only) -----------------------------------------------------
    def on_task_start(self, task_id: int) -> None:
        if self.optim_cfg.reset_per_task:
            self.reset_optimizer_state()

    def reset_optimizer_state(self) -> None:
        """Forget momentum / Adam moments, keeping the optimizer object. Lightning has already taken this very
        object for the phase's fit (configure_optimizers runs before the task hooks), so the state it builds up
        is the state a mid-phase checkpoint saves: dropping the object instead would train with an orphan
        that no checkpoint sees, and a resumed phase would restart its optimizer from zero."""
        if self._optimizer is not None:
            self._optimizer.state.clear()

    def on_task_end(self, task_id: int, samples: TaskSamples) -> None:
        """Called after the last step on a task; `samples` reads that task's training (or validation) data."""

    def final_metrics(self, ctx: "FinalContext") -> dict[str, Any]:
        """Method-specific figures for metrics.json, computed once at the end of the run.

        `ctx` knows the true tasks and boundaries (for reporting only: training is over). A "warnings" entry
        (a list of one-line strings) is printed at the end of the run and kept in metrics.json's "warnings".
        """
        return {}


@dataclass
class FinalContext:
    """What the trainer knows at the end of a run, for methods' and plugins' own metrics."""

    stream: Stream
    phase_end_steps: list[int]  # global optimizer step count at the end of each phase (true boundaries)
    device: torch.device
    eval_batch_size: int
    rank: int = 0  # under DDP: split evaluation work with eval_batches(..., rank, world_size) + all_sum
    world_size: int = 1
    run_dir: Optional[str] = None  # the run folder, for a method's own plots (rank 0 writes them)
    # step of the first batch holding each next phase's rows; None: the phase ends (aligned batches). With mixed
    # boundary batches it is the batch ending the phase when that batch straddles the boundary.
    first_new_steps: Optional[list[int]] = None

    def shift_steps(self) -> list[int]:
        """Where each phase's successor first shows up in the stream (what shift detection is scored against)."""
        return self.phase_end_steps if self.first_new_steps is None else self.first_new_steps


# name -> Learner subclass. One file per method registers itself here.
LEARNERS: Registry[type[Learner]] = Registry("learner", "learner.name")


def param_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def keep_signature(step: Any) -> None:
    """Lightning reads training_step's signature on every step (`inspect.getfullargspec`, to decide whether to pass
    batch_idx), parsing the function's code each time (~20 µs); a stored `__signature__` is what inspect reads
    first, and it is the same signature."""
    if inspect.isfunction(step):
        step.__signature__ = inspect.signature(step)


def check_overrides(cls: type[Learner]) -> None:
    """A Learner subclass changes what a step computes, never how it steps: the Learner's training_step takes the
    optimizer step, so a redefined training_step would return a loss no one steps on, and a redefined
    on_before_optimizer_step would drop or reorder the gradient clipping. Refused when the class is made."""
    if "training_step" in cls.__dict__ and not cls.optimizes_itself:
        raise TypeError(f"{cls.__name__} defines training_step: override step_outputs(batch, batch_idx) instead (the "
                        "batch's loss; the Learner steps on it), or set optimizes_itself = True and step by hand")
    if "on_before_optimizer_step" in cls.__dict__:
        raise TypeError(f"{cls.__name__} defines on_before_optimizer_step: override before_update(optimizer) "
                        "instead (the Learner clips the gradients right after it)")


keep_signature(Learner.training_step)
