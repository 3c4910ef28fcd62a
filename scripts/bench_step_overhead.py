"""Lightning's host work per training step: a plain LightningModule, cltrain's Learner, and a plain loop.

    python scripts/bench_step_overhead.py [--steps 2000] [--rounds 5] [--device cpu|cuda]

A network too small to cost anything (Linear 32 -> 10 on a fixed 128-row batch, SGD with momentum) is trained
for --steps steps five ways, in one process, the rows alternating every round (the order rotating):

  plain loop                       zero_grad / forward / backward / step by hand: the floor
  Lightning default                pl.Trainer.fit on a plain LightningModule, Lightning's default profiler
  Learner, automatic loop          cltrain's Learner (fine-tuning) fed cltrain `Batch`es, null profiler, stepped by
                                   Lightning's automatic loop as it was until 2026-11-30 (the closure and its
                                   hooks): what stepping in the Learner saves
  cltrain Learner, default prof.   pl.Trainer.fit on cltrain's Learner, which takes its optimizer step itself
                                   (Lightning's manual optimization), with Lightning's default profiler
  cltrain Learner                  the same with cltrain.trainer.NullProfiler: what every cltrain run has

With --calls, each row first runs --steps steps under cProfile and prints the Python function calls a step
makes (a count that does not depend on the machine's load, unlike the times).

Per row: microseconds per step (wall, median and range over the rounds); each fit's fixed cost (Trainer set-up)
is left out by timing from the first batch's start to the fit's end, over the steps after the first. The
difference to the plain loop is what Lightning adds to every step: on a GPU, where a small network's step takes
~0.1 ms, that is what decides the speed.
"""
from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cltrain.config import OptimConfig  # noqa: E402
from cltrain.learners.base import Learner  # noqa: E402
from cltrain.streams.loader import Batch  # noqa: E402
from cltrain.trainer import NullProfiler  # noqa: E402


class Small(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(32, 10)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def learner() -> Learner:
    return Learner(torch.nn.Linear(32, 10), OptimConfig(name="sgd", lr=0.01, momentum=0.9))


class LightningStepped(Learner):
    """The Learner as it stepped until 2026-11-30: Lightning's automatic loop takes the step (the closure around
    training_step, the zero_grad and optimizer_step hook rounds). A measuring device, not a learner to ship: it is
    marked optimizes_itself only because the Learner refuses a redefined training_step otherwise."""

    optimizes_itself = True

    def __init__(self, model: torch.nn.Module, optim: OptimConfig):
        super().__init__(model, optim)
        self.automatic_optimization = True

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self.step_outputs(batch, batch_idx)


def lightning_stepped() -> Learner:
    return LightningStepped(torch.nn.Linear(32, 10), OptimConfig(name="sgd", lr=0.01, momentum=0.9))


class Batches:
    """The same on-device batch `n` times (no DataLoader: cltrain's loader hands out ready tensors too)."""

    def __init__(self, batch, n: int):
        self.batch, self.n = batch, n

    def __iter__(self):
        return (self.batch for _ in range(self.n))

    def __len__(self) -> int:
        return self.n


class StepClock(Callback):
    """Wall time from the first batch's start to the last batch's end: the steps alone."""

    def __init__(self, device: str):
        self.device, self.start, self.seconds = device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def lightning(make_module, profiler, batch, steps: int, device: str, keep: Optional[list] = None) -> float:
    """Seconds a step of `make_module()` fitted on `batch`; `keep` receives the trained module (tests)."""
    clock = StepClock(device)
    module = make_module()
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                         callbacks=[clock], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, profiler=profiler)
    trainer.fit(module, train_dataloaders=Batches(batch, steps + 1))
    if keep is not None:
        keep.append(module)
    return clock.seconds / steps


def plain(batch, steps: int, device: str) -> float:
    model = Small().to(device)
    opt = model.configure_optimizers()
    x, y = batch
    for i in range(steps + 1):
        if i == 1:  # as the Lightning rows: the first step is not timed
            sync(device)
            start = time.perf_counter()
        loss = model.training_step((x, y), i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--calls", action="store_true", help="print each row's Python function calls per step first")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)  # its per-fit notices, 4 Lightning fits a round
    torch.manual_seed(0)
    batch = (torch.randn(128, 32, device=args.device), torch.randint(0, 10, (128,), device=args.device))
    ours = Batch(*batch, t=None, n_new=len(batch[1]))
    rows = {
        "plain loop": lambda: plain(batch, args.steps, args.device),
        "Lightning default": lambda: lightning(Small, None, batch, args.steps, args.device),
        "Learner, automatic loop": lambda: lightning(lightning_stepped, NullProfiler(), ours, args.steps, args.device),
        "cltrain Learner, default prof.": lambda: lightning(learner, None, ours, args.steps, args.device),
        "cltrain Learner": lambda: lightning(learner, NullProfiler(), ours, args.steps, args.device),
    }
    names = list(rows)
    if args.calls:
        for name in names:
            print(f"{name:31s} {calls_per_step(rows[name], args.steps):7.1f} Python calls a step", flush=True)
    times: dict[str, list[float]] = {name: [] for name in names}
    rows["plain loop"]()  # warm-up: first calls pay for lazy initialisation
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(rows[name]() * 1e6)
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f}" for n in names) + " us/step", flush=True)
    floor = times["plain loop"]
    print(f"\n{args.steps} steps, {args.device}, {args.rounds} round(s); us per step, median [min-max]")
    print(f"{'row':31s} {'us/step':>24s} {'over the plain loop':>26s}")
    for name in names:
        over = [a - b for a, b in zip(times[name], floor)]
        print(f"{name:31s} {spread(times[name]):>24s} {spread(over):>26s}")
    return 0


def calls_per_step(row: Callable[[], float], steps: int) -> float:
    """Function calls a step under cProfile (the fit's fixed calls spread over `steps`: use a few thousand)."""
    profile = cProfile.Profile()
    profile.enable()
    row()
    profile.disable()
    return pstats.Stats(profile).total_calls / steps


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


if __name__ == "__main__":
    sys.exit(main())
