"""optim.grad_clip_norm: every step's gradient is rescaled to at most that global L2 norm, the norm before
clipping is logged, and a learner that steps its own optimizers is refused. Real MNIST, real runs."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from conftest import QUICK

pytestmark = pytest.mark.usefixtures("one_thread")

LR, STEPS = 0.1, 60
# Plain SGD (no momentum, no weight decay): a step moves the weights by lr * (clipped gradient), so the steps of a
# phase move them at most STEPS * LR * cap in L2 norm, whatever the data.
SGD = ["bench/pmnist_naive", *QUICK, "stream.n_tasks=1", "model.hidden=[64]", f"trainer.steps_per_task={STEPS}",
       f"optim.lr={LR}", "optim.momentum=0", "optim.weight_decay=0", "trainer.keep_phase_weights=true"]


def _moved(run) -> float:
    start = torch.load(run / "checkpoints" / "phase_start.pt", map_location="cpu")
    end = torch.load(run / "checkpoints" / "phase_0.pt", map_location="cpu")
    return math.sqrt(sum(float((end[k] - start[k]).pow(2).sum()) for k in start))


def _logged_norms(run) -> list[float]:
    (log,) = (run / "logs").rglob("metrics.csv")
    return [float(r["train/grad_norm"]) for r in csv.DictReader(log.open()) if r.get("train/grad_norm")]


def test_the_cap_bounds_every_step_and_the_norm_before_it_is_logged(tmp_path):
    from cltrain.cli import main

    cap = 0.01
    clipped, free = tmp_path / "clipped", tmp_path / "free"
    assert main(["fit", *SGD, f"optim.grad_clip_norm={cap}", f"run_dir={clipped}"]) == 0
    assert main(["fit", *SGD, f"run_dir={free}"]) == 0
    bound = STEPS * LR * cap
    assert _moved(clipped) <= bound * (1 + 1e-4)
    assert _moved(free) > 10 * bound  # without the cap the same steps go much further: the cap acted
    norms = _logged_norms(clipped)
    assert norms and all(n > cap for n in norms)  # logged before clipping, not the capped value
    assert not _logged_norms(free)  # no cap, no extra logging


def test_a_cap_above_every_gradient_changes_nothing(tmp_path):
    """Clipping multiplies by min(1, cap / norm): a cap no step reaches gives the unclipped run, bit for bit."""
    from cltrain.cli import main

    runs = [tmp_path / "high", tmp_path / "none"]
    assert main(["fit", *SGD, "optim.grad_clip_norm=1e6", f"run_dir={runs[0]}"]) == 0
    assert main(["fit", *SGD, f"run_dir={runs[1]}"]) == 0
    a, b = (torch.load(r / "checkpoints" / "phase_0.pt", map_location="cpu") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_learner_stepping_its_own_optimizers_is_refused_before_any_run_folder(tmp_path, capsys):
    from cltrain.cli import main

    run = tmp_path / "tame"
    code = main(["fit", "tame/split_mnist", *QUICK, "optim.grad_clip_norm=1.0", f"run_dir={run}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "optim.grad_clip_norm" in lines[0] and "tame" in lines[0] and not run.exists()
