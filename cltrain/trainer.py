"""ContinualTrainer: the loop over phases (DESIGN.md, "Concepts").

Task-aware streams: one Lightning fit per phase; the learner's task hooks run at each boundary.
Task-agnostic streams: one Lightning fit over all phases' data; boundaries are hidden from the learner and
only `_PhaseDriver` (a callback of ours) knows them, to evaluate, record and checkpoint at the right batch.
Either way each phase ends the same way: (task hooks,) evaluation on every task, a row of the accuracy
matrix, logs, and a checkpoint from which `resume=true` continues.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback
from pytorch_lightning.profilers import PassThroughProfiler

from cltrain.config import ExperimentConfig, to_yaml
from cltrain.distributed import SelfSyncDDPStrategy, barrier, collective_check, module_digest, ranks_agree
from cltrain.evaluation import EVALUATORS
from cltrain.learners.base import FinalContext, Learner
from cltrain.loggers import RunLoggers
from cltrain.metrics import seen_average, summary
from cltrain.plots import acc_matrix_png, retention_png
from cltrain.plugins.base import Plugin
from cltrain.preemption import Preempted, PreemptionWatcher
from cltrain.progress import LearnerBar
from cltrain.run import RunFolder
from cltrain.seeding import derive_seed, rng_snapshot
from cltrain.streams.base import Stream
from cltrain.streams.loader import PhaseLoader, Segment, task_rows
from cltrain.streams.schedules import phase_indices


@dataclass
class Progress:
    """Everything about a run's course that a checkpoint must carry to resume it exactly."""

    next_phase: int = 0
    rows: list[list[float]] = field(default_factory=list)
    acc_init: Optional[list[float]] = None
    phase_times: list[float] = field(default_factory=list)
    steps: int = 0
    phase_end_steps: list[int] = field(default_factory=list)
    setup_time: float = 0.0
    batches_into_phase: int = 0  # > 0: a mid-phase checkpoint (preemption) of phase next_phase
    phase_elapsed: float = 0.0  # seconds already spent in that unfinished phase
    val_rows: list[list[float]] = field(default_factory=list)  # stream.val_fraction > 0: the same on validation
    val_init: Optional[list[float]] = None


class ContinualTrainer:
    def __init__(self, cfg: ExperimentConfig, stream: Stream, learner: Learner, plugins: dict[str, Plugin],
                 counts: np.ndarray, run: RunFolder):
        self.cfg, self.stream, self.learner, self.plugins = cfg, stream, learner, plugins
        self.counts = counts
        self.run = run
        self.progress = Progress()
        self.loggers: Optional[RunLoggers] = None
        self._placed = False
        self.rank, self.world_size = 0, 1
        self.watcher = PreemptionWatcher()
        self.ranks_agree: Optional[bool] = None  # DDP: did every rank end every fit with the same weights?
        self._rng_state: Optional[dict[str, Any]] = None  # a checkpoint's global RNG, put back at its batch
        self._precision_state: dict[str, Any] = {}  # the precision plugin's (grad scaler's) state, across fits

    # ---- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        start = time.perf_counter()
        threads = torch.get_num_threads()  # _place may lower it for DDP on CPU; the caller gets it back
        if self.cfg.resume:
            self._restore(self.run.load_checkpoint())
        else:
            # In-model randomness (dropout) draws from torch's global RNG; every other consumer has its own.
            torch.manual_seed(derive_seed(self.cfg.seed, "torch_global"))
        self.loggers = RunLoggers(self.cfg, self.run)
        remaining = list(range(self.progress.next_phase, self.stream.n_phases))
        groups = [[k] for k in remaining] if self.stream.task_aware else ([remaining] if remaining else [])
        self.progress.setup_time += time.perf_counter() - start
        self.watcher.install()
        try:
            for phases in groups:
                self._fit_phases(phases)
        finally:
            self.watcher.uninstall()
            torch.set_num_threads(threads)
        return self._finish()

    def _pl_trainer(self, callbacks: list[Callback]) -> pl.Trainer:
        t = self.cfg.trainer
        return pl.Trainer(
            max_epochs=1, accelerator=t.accelerator, devices=t.devices, strategy=self._strategy(),
            num_nodes=t.num_nodes,
            precision=t.precision, logger=self.loggers.lightning,
            callbacks=[*callbacks, LearnerBar()] if t.progress_bar else callbacks,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=t.progress_bar,
            num_sanity_val_steps=0, use_distributed_sampler=False, log_every_n_steps=50,
            profiler=NullProfiler(),  # optim.grad_clip_norm: the Learner clips (it steps its optimizer itself)
        )

    def _strategy(self) -> str | SelfSyncDDPStrategy:
        t = self.cfg.trainer
        if self.learner.syncs_own_gradients and t.several_processes:
            return SelfSyncDDPStrategy()  # the config check allowed only auto/ddp here
        return t.strategy

    def _fit_phases(self, phases: list[int]) -> None:
        phase_start = time.perf_counter() - self.progress.phase_elapsed
        segments = [self.segment(k) for k in phases]
        # resuming: skip what a preempted phase already trained on; the global RNG continues from the checkpoint
        segments[0].skip, segments[0].rng_state = self.progress.batches_into_phase, self._rng_state
        self._rng_state = None
        mixed = self.cfg.trainer.boundary_batches == "mixed"
        if mixed:
            segments[0].offset = self._mixed_offset(phases[0])
        driver = _PhaseDriver(self, phases, segments, phase_start)
        trainer = self._pl_trainer([*self.plugins.values(), driver])
        self._place(trainer)
        loader = PhaseLoader(
            self.stream, segments, self.cfg.trainer.batch_size, self.cfg.seed,
            rank=trainer.global_rank, world_size=trainer.world_size, hide_task_ids=not self.stream.task_aware,
            mixed=mixed,
            materialise_bytes=self.cfg.trainer.materialise_mb << 20,
        )
        driver.boundaries = loader.boundaries
        with collective_check():
            trainer.fit(self.learner, train_dataloaders=loader)

    def _mixed_offset(self, phase: int) -> int:
        """Mixed boundary batches: rows of `phase` that the batch ending the previous phase took (every batch
        before the stream's end is full, so it is what the earlier phases' rows leave to fill a batch)."""
        bs = self.cfg.trainer.batch_size
        before = sum(self.segment(k).n_samples(bs) for k in range(phase))
        return -before % bs

    def _first_new_steps(self) -> Optional[list[int]]:
        """Mixed boundary batches: a phase's last batch holds the next phase's first rows unless the phase's rows
        end exactly on a batch edge; aligned: None (the next phase starts after the phase end)."""
        if self.cfg.trainer.boundary_batches != "mixed":
            return None
        ends, bs = self.progress.phase_end_steps, self.cfg.trainer.batch_size
        return [end - bool(self._mixed_offset(k + 1) % bs) for k, end in enumerate(ends)]

    def _place(self, trainer: pl.Trainer) -> None:
        """Move the stream's arrays to the training device once per run (not per phase)."""
        self.rank, self.world_size = trainer.global_rank, trainer.world_size
        if trainer.world_size > 1 and trainer.strategy.root_device.type == "cpu":
            # Several processes on one machine's cores: more threads than cores makes torch's OpenMP workers
            # spin against each other (10-100x slower), so each process takes its share of the cores.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, trainer.num_devices)))
        if not self._placed:
            self.stream.to(trainer.strategy.root_device)
            self._placed = True

    def segment(self, phase: int) -> Segment:
        idx, tids = phase_indices(self.stream, self.counts[phase], phase, self.cfg.seed,
                                  self.cfg.stream.rehearsal.nested)
        t = self.cfg.trainer
        return Segment(phase, idx, tids, Segment.batches_for(idx.numel(), t.batch_size, t.epochs_per_task,
                                                             t.steps_per_task))

    # ---- phase boundaries (called by _PhaseDriver inside the fit) ------------------------------------
    def start_phase(self, phase: int) -> None:
        self.open_classes(phase)
        if phase == 0:
            self.keep_weights("phase_start")  # before a learner's task hook can move them
        if self.stream.task_aware:
            task_id = self.stream.order[phase]
            self.learner.on_task_start(task_id)
            for plugin in self.plugins.values():
                plugin.on_task_start(self.learner, task_id)

    def open_classes(self, phase: int) -> None:
        """stream.active_classes=seen: the loss covers the classes of the tasks met up to this phase. Derived from
        the phase alone, not kept in the learner's state, so a resumed phase gets the same classes back."""
        if self.cfg.stream.active_classes == "seen":
            met = torch.as_tensor(self.stream.order[: phase + 1])
            self.learner.seen_classes = self.stream.task_classes()[met].any(0).to(self.learner.device)

    def end_phase(self, trainer: pl.Trainer, phase: int, started: float, steps: int) -> None:
        if self.stream.task_aware:
            task_id = self.stream.order[phase]
            self.learner.on_task_end(task_id, lambda bs, n, split="train": self.task_samples(task_id, bs, n, split))
            for plugin in self.plugins.values():
                plugin.on_task_end(self.learner, task_id)
        row = self.evaluate(trainer)
        if self.stream.has_val:
            self.progress.val_rows.append(self.evaluate(trainer, "val"))
        seconds = time.perf_counter() - started  # training + task hooks + evaluation of this phase
        p = self.progress
        p.rows.append(row)
        p.phase_times.append(seconds)
        p.steps += steps
        p.phase_end_steps.append(p.steps)
        p.next_phase = phase + 1
        p.batches_into_phase, p.phase_elapsed = 0, 0.0
        self._precision_state = precision_state(trainer)
        if self.rank == 0:
            seen = seen_average(np.array(p.rows), self.stream.order)[-1]
            self.loggers.log_phase(phase, row, seen, p.steps)
            if self.cfg.trainer.checkpoint:
                self.run.save_checkpoint(self.checkpoint_state(), phase)
            self.keep_weights(f"phase_{phase}")
            print(f"[cltrain] phase {phase + 1}/{self.stream.n_phases} (task {self.stream.order[phase]}): "
                  f"mean acc over seen tasks {seen:.4f} | {seconds:.1f} s", flush=True)

    def preempt(self, trainer: pl.Trainer, phase: int, batches_done: int, elapsed: float) -> None:
        """Checkpoint in the middle of a phase, requeue if SLURM asked for it, and stop the run."""
        p = self.progress
        if batches_done:  # at a phase boundary end_phase has just saved everything already
            p.batches_into_phase, p.phase_elapsed = batches_done, elapsed
            self._precision_state = precision_state(trainer)
            if self.rank == 0:
                self.run.save_checkpoint(self.checkpoint_state(), phase)
        barrier()
        requeued = self.watcher.requeue_if_asked() if self.rank == 0 else None
        where = f"phase {phase + 1}, batch {batches_done}" if batches_done else f"the end of phase {phase}"
        raise Preempted(f"stopped by signal {self.watcher.received} after checkpointing at {where} in "
                        f"{self.run.path}" + (f"; requeued SLURM job {requeued}" if requeued else
                                              "; continue with resume=true"))

    def task_samples(self, task_id: int, batch_size: int, max_samples: int, split: str = "train"):
        """Batches of up to max_samples rows of one task's training (or validation) split, a seeded subset, for
        method hooks (learners.base.TaskSamples)."""
        idx = task_rows(self.stream.tasks[task_id], max_samples, self.cfg.seed, split)
        segment = Segment(-1 - task_id, idx, torch.full_like(idx, task_id), -(-idx.numel() // batch_size))
        return PhaseLoader(self.stream, [segment], batch_size, self.cfg.seed)

    def keep_weights(self, name: str) -> None:
        """trainer.keep_phase_weights: the network's state dict as checkpoints/<name>.pt (rank 0; a resumed run
        keeps the file an earlier attempt wrote, which holds the weights of that moment)."""
        if self.cfg.trainer.keep_phase_weights and self.rank == 0:
            self.run.save_weights(name, self.learner.model.state_dict())

    # ---- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, trainer: pl.Trainer, split: str = "test") -> list[float]:
        """A score per task (future ones too) from the stream's evaluator: test (or validation) accuracy, rollout
        success, ..."""
        score = EVALUATORS.get(self.stream.evaluator)
        return score(self.stream, self.learner, self.cfg.trainer.eval_batch_size, trainer.global_rank,
                     trainer.world_size, self.cfg.seed, split)

    # ---- checkpoints ----------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "progress": dataclasses.asdict(self.progress),
            "learner": self.learner.state_dict(),
            "optimizer": self.learner.optimizer_state(),
            "plugins": {name: plugin.state_dict() for name, plugin in self.plugins.items()},
            "rng": rng_snapshot(self.stream.train.images.device),
            "precision": self._precision_state,
            "config": self._config_yaml,
        }

    @functools.cached_property
    def _config_yaml(self) -> str:
        """The run's config as YAML, once per run: OmegaConf takes ~0.1 s to write it and it never changes."""
        return to_yaml(self.cfg)

    def _restore(self, state: dict[str, Any]) -> None:
        self.progress = Progress(**state["progress"])
        self.learner.load_state_dict(state["learner"])
        self.learner.load_optimizer_state(state["optimizer"])
        for name, plugin in self.plugins.items():
            plugin.load_state_dict(state["plugins"].get(name, {}))
        self._rng_state = state["rng"] if "rng" in state else {"cpu": state["torch_rng"]}  # older checkpoints
        self._precision_state = state.get("precision", {})

    # ---- the end --------------------------------------------------------------------------------------
    def _finish(self) -> dict[str, Any]:
        p = self.progress
        R, b = np.array(p.rows), None if p.acc_init is None else np.array(p.acc_init)
        metrics: dict[str, Any] = {
            "acc_matrix": p.rows,
            "acc_init": p.acc_init,
            **summary(R, b, self.stream.order),
            "avg_acc_seen": seen_average(R, self.stream.order),
            "order": self.stream.order,
            "n_tasks": len(self.stream.tasks),
            "n_phases": self.stream.n_phases,
            "phase_wall_time_s": p.phase_times,
            "wall_time_s": p.setup_time + sum(p.phase_times),
            # when, not how long: results pages date their runs by it (a file's time is the checkout's once a
            # run's records are kept in git)
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "steps": p.steps,
        }
        if p.val_rows:  # the same figures on validation data, to choose hyperparameters by (report --select val)
            V, b_val = np.array(p.val_rows), np.array(p.val_init)
            val = {"acc_matrix": p.val_rows, "acc_init": p.val_init, **summary(V, b_val, self.stream.order)}
            metrics.update({f"val_{k}": v for k, v in val.items()})
        if self.ranks_agree is not None:
            metrics["ddp_weights_agree"] = self.ranks_agree
        # Lightning's teardown moves the module back to the CPU after every fit while the stream's arrays stay
        # on the training device; the final figures (routing, retrieval, zero-shot models) need both together.
        self.learner.to(self.stream.device)
        ctx = FinalContext(self.stream, p.phase_end_steps, self.learner.device,
                           self.cfg.trainer.eval_batch_size, self.rank, self.world_size, str(self.run.path),
                           self._first_new_steps())
        metrics.update(self._method_figures(ctx))
        if self.rank == 0:
            for warning in metrics["warnings"]:
                print(f"[cltrain] warning: {warning}", file=sys.stderr, flush=True)
            self._write_outputs(metrics, R)
        return metrics

    def _method_figures(self, ctx: FinalContext) -> dict[str, Any]:
        """The learner's and every plugin's own figures; their "warnings" lists are joined into one."""
        figures: dict[str, Any] = {}
        warnings: list[str] = []
        for part in [self.learner, *self.plugins.values()]:
            own = part.final_metrics(ctx)
            warnings += own.pop("warnings", [])
            figures.update(own)
        return {**figures, "warnings": warnings}

    def _write_outputs(self, metrics: dict[str, Any], R: np.ndarray) -> None:
        run, n_tasks = self.run, R.shape[1]
        header = ["phase", "task", "avg_acc_seen", *[f"acc_task_{j}" for j in range(n_tasks)], "wall_time_s"]
        init = [["init", "", "", *metrics["acc_init"], ""]] if metrics["acc_init"] is not None else []
        rows = init + [
            [k, self.stream.order[k], metrics["avg_acc_seen"][k], *R[k].tolist(), metrics["phase_wall_time_s"][k]]
            for k in range(R.shape[0])
        ]
        run.write_csv("metrics.csv", header, rows)
        acc_matrix_png(R, run.path / "acc_matrix.png", f"{self.cfg.name}: test accuracy (%)")
        retention_png(R, run.path / "retention.png", self.stream.order, f"{self.cfg.name}: retention")
        self.loggers.finish(metrics, run.path)
        # Last: metrics.json marks a finished run (sweeps, `cltrain report`, resume all read it that way).
        run.write_json("metrics.json", metrics)
        fwt = "n/a" if metrics["fwt"] is None else f"{metrics['fwt']:+.4f}"  # null: trainer.eval_init=false
        print(f"[cltrain] done: ACC {metrics['acc']:.4f}  BWT {metrics['bwt']:+.4f}  FWT {fwt}  "
              f"forgetting {metrics['forgetting']:.4f}  ({metrics['wall_time_s']:.1f} s) -> {run.path}", flush=True)


class NullProfiler(PassThroughProfiler):
    """Lightning's default profiler (which records nothing) without its cost: Lightning enters
    `profiler.profile(name)` around every hook, ~46 times a training step, and the default builds a generator-made
    context manager each time (~2.5 µs: ~0.1 ms a step, the whole step of a small network on a GPU). One reusable
    null context does the same nothing."""

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._NOTHING


def continue_logging_step(trainer: pl.Trainer, steps: int) -> None:
    """Continue Lightning's logging step across our per-phase fits, so curves do not restart at 0 each phase.

    Lightning has no public setter for it: this is the one place that writes its private counter, and it
    fails loudly (tests/test_trainer_internals.py runs it on a real fit) if Lightning renames or drops it.
    """
    loop = trainer.fit_loop.epoch_loop
    if not isinstance(getattr(loop, "_batches_that_stepped", None), int):
        raise RuntimeError(f"pytorch_lightning {pl.__version__}: fit_loop.epoch_loop._batches_that_stepped is gone; "
                           "cltrain.trainer.continue_logging_step must be ported")
    loop._batches_that_stepped = steps


def precision_state(trainer: pl.Trainer) -> dict[str, Any]:
    """The precision plugin's state (16-mixed: the grad scaler's scale and growth tracker; else empty)."""
    return trainer.strategy.precision_plugin.state_dict()


def load_precision_state(trainer: pl.Trainer, state: dict[str, Any]) -> None:
    """Carry the scaler across per-phase fits and resumes, as one uninterrupted loop would keep it."""
    if state:
        trainer.strategy.precision_plugin.load_state_dict(state)


class _PhaseDriver(Callback):
    """Finds phase boundaries inside a fit by counting batches; the learner never sees this."""

    def __init__(self, owner: ContinualTrainer, phases: list[int], segments: list[Segment], phase_start: float):
        self.owner = owner
        self.phases = phases
        self.segments = segments
        self.boundaries: list[int] = []
        self.current = 0
        self.t0 = phase_start

    def on_train_start(self, trainer, pl_module) -> None:
        owner = self.owner
        owner.watcher.install()  # Lightning has just installed its own signal handlers; ours take over
        continue_logging_step(trainer, owner.progress.steps)
        load_precision_state(trainer, owner._precision_state)
        if owner.cfg.trainer.eval_init and owner.progress.acc_init is None:
            owner.progress.acc_init = owner.evaluate(trainer)  # b_j for forward transfer
            if owner.stream.has_val:
                owner.progress.val_init = owner.evaluate(trainer, "val")
        if not owner.progress.batches_into_phase:  # a resumed phase has had its start already
            owner.start_phase(self.phases[0])
        else:
            owner.open_classes(self.phases[0])  # not the start's other work, but the classes it opened

    def on_train_end(self, trainer, pl_module) -> None:
        """Under DDP, compare a checksum of the weights across ranks once per fit: anything that changes weights
        outside DDP's gradient sync (a plugin fine-tuning on a buffer, say) must do it identically everywhere."""
        if trainer.world_size == 1:
            return
        agree = ranks_agree([module_digest(pl_module)], pl_module.device, rtol=1e-9)
        self.owner.ranks_agree = agree and self.owner.ranks_agree is not False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        at_boundary = self.current < len(self.boundaries) and batch_idx + 1 == self.boundaries[self.current]
        if at_boundary:
            self.owner.end_phase(trainer, self.phases[self.current], self.t0, self.segments[self.current].n_batches)
            self.current += 1
            self.t0 = time.perf_counter()
            if self.current < len(self.phases):
                self.owner.start_phase(self.phases[self.current])
        if self.owner.watcher.should_stop(trainer, batch_idx + 1):
            if at_boundary:
                self.owner.preempt(trainer, self.phases[self.current - 1] + 1, 0, 0.0)
            previous = self.boundaries[self.current - 1] if self.current else 0
            done = batch_idx + 1 - previous + self.segments[self.current].skip
            self.owner.preempt(trainer, self.phases[self.current], done, time.perf_counter() - self.t0)
