"""Shift detection: the pure detectors on controlled loss sequences, and the plugin on a real MNIST stream."""
import json

import numpy as np
import pytest

from cltrain.config import load_config
from cltrain.experiment import run_experiment
from cltrain.plugins.detection import EMAWindowDetector, WelchDetector, score_detections, true_shifts
from conftest import QUICK


pytestmark = pytest.mark.usefixtures("one_thread")


def _losses(seed=0, n=300, level=1.5, noise=0.01, jump_at=None, jump=0.6):
    rng = np.random.default_rng(seed)
    x = level + noise * rng.standard_normal(n)
    if jump_at is not None:
        x[jump_at:] += jump
    return x.tolist()


def _alarms(detector, losses):
    return [i for i, loss in enumerate(losses) if detector.update(loss)]


@pytest.mark.parametrize("make", [
    lambda: EMAWindowDetector(window=100, alpha=0.2, k=3.0, std_floor=0.005, init=None),
    lambda: WelchDetector(window=100, recent=10, significance=1e-4),
], ids=["ema_window", "welch"])
def test_detector_quiet_when_stationary_and_fires_on_a_jump(make):
    assert _alarms(make(), _losses()) == []
    alarms = _alarms(make(), _losses(jump_at=200))
    assert alarms and 200 <= alarms[0] <= 210  # EMA: 1-2 batches; t-test: a few recent losses


def test_ema_window_freezes_after_an_alarm_and_accepts_its_own_distribution_again():
    det = EMAWindowDetector(init=float(np.log(10)))
    for loss in _losses(n=150):
        det.update(loss)
    frozen = (det.threshold(), det.ema)
    assert det.fires(2.3)  # a new task's loss
    assert (det.threshold(), det.ema) == frozen  # judging does not change the state
    assert det.accepts(1.5) and not det.accepts(2.3)  # a recurring task passes, a new one does not


def test_scoring_matches_detections_to_boundaries():
    shifts = true_shifts([100, 200, 300], [0, 1, 2])
    assert shifts == [100, 200]
    out = score_detections([3, 102, 150], shifts, 300)  # 3: before any shift, 150: a second alarm in task 1
    assert out["detection_delays"] == [2] and out["detection_missed"] == 1 and out["detection_false"] == 2
    assert true_shifts([10, 20, 30], [0, 0, 1]) == [20]  # the same task twice in a row is no shift


def test_plugin_fires_at_the_real_boundary_of_a_task_agnostic_mnist_stream(tmp_path):
    """Fine-tuning (it knows nothing of shifts) on 2 permuted-MNIST tasks; the plugin watches its loss."""
    run = tmp_path / "run"
    cfg = load_config("bench/pmnist_naive", [
        *QUICK, "stream.n_tasks=2", "stream.presentation=task_agnostic", "trainer.epochs_per_task=4",
        # A short, still-improving task: a window of the last 30 losses and a faster average (alpha 0.5) keep
        # the threshold near the current loss level (TAME's 100 / 0.2 assume a converged expert).
        "plugins.detection.method=ema_window", "plugins.detection.window=30", "plugins.detection.alpha=0.5",
        f"run_dir={run}",
    ])
    metrics = run_experiment(cfg)
    shift = metrics["true_shifts"]
    assert shift == [64]  # 2,000 images / 128 = 16 batches x 4 epochs
    assert metrics["detection_missed"] == 0
    assert metrics["detection_false"] == 0, metrics["detection_events"]  # nothing inside a stationary task
    assert metrics["detection_delays"][0] <= 3
    assert (run / "detection.png").stat().st_size > 0
    assert json.loads((run / "metrics.json").read_text())["detection_events"] == metrics["detection_events"]


def _settled(det, losses):
    """Absorb losses as in-distribution; returns the window's mean and effective std (what the threshold uses)."""
    for loss in losses:
        det.observe(loss)
    values = det.window.view()
    return float(values.mean()), max(float(values.std()), det.std_floor)


def _loss_for_ema(det, target):
    """The loss that moves the detector's average exactly to `target` if absorbed."""
    return (target - (1 - det.alpha) * det.ema) / det.alpha


@pytest.mark.parametrize("k", [2.0, 3.0, 5.0])
def test_ema_window_fires_just_above_mean_plus_k_std_and_not_just_below(k):
    rng = np.random.default_rng(1)
    det = EMAWindowDetector(window=50, alpha=0.2, k=k, std_floor=1e-6, init=None)
    mean, std = _settled(det, (1.0 + 0.05 * rng.standard_normal(50)).tolist())
    assert std > 0.03  # the noise, not the floor, sets the threshold here
    assert not det.fires(_loss_for_ema(det, mean + (k - 0.05) * std))
    assert det.fires(_loss_for_ema(det, mean + (k + 0.05) * std))


def test_ema_window_std_floor_sets_the_threshold_of_a_flat_loss():
    det = EMAWindowDetector(window=20, alpha=0.2, k=3.0, std_floor=0.01, init=None)
    mean, std = _settled(det, [0.5] * 20)
    assert std == 0.01  # a constant loss has std 0: the floor stands in
    assert not det.fires(_loss_for_ema(det, 0.5 + 3.0 * 0.01 * 0.95))
    assert det.fires(_loss_for_ema(det, 0.5 + 3.0 * 0.01 * 1.05))


def test_ema_window_starting_window_holds_the_initial_loss():
    """TAME's rule: the window starts as [ln C], so the first losses are judged against that level too."""
    init = float(np.log(10))
    det = EMAWindowDetector(window=10, alpha=0.2, k=3.0, std_floor=0.005, init=init)
    assert det.threshold() == pytest.approx(init + 3.0 * 0.005)
    assert not det.fires(100.0)  # nothing absorbed yet: no distribution to shift away from
    det.observe(2.0)
    expected = np.mean([init, 2.0]) + 3.0 * max(np.std([init, 2.0]), 0.005)
    assert det.threshold() == pytest.approx(expected)
    without = EMAWindowDetector(window=10, alpha=0.2, k=3.0, std_floor=0.005, init=None)
    without.observe(2.0)
    assert without.threshold() == pytest.approx(2.0 + 3.0 * 0.005)  # the init really was in the window


def test_ema_window_min_window_silences_the_first_losses():
    det = EMAWindowDetector(window=50, alpha=0.2, k=3.0, std_floor=0.005, init=None, min_window=5)
    for _ in range(4):
        det.observe(1.0)
    assert not det.fires(50.0)  # 4 < min_window losses: no alarm whatever the loss
    det.observe(1.0)
    assert det.fires(_loss_for_ema(det, 1.0 + 3.0 * 0.005 * 1.05))  # from the 5th on, the usual rule
    assert not det.fires(_loss_for_ema(det, 1.0 + 3.0 * 0.005 * 0.95))


def test_plugin_that_never_fires_warns(tmp_path):
    """Phases of 4 batches and min_window=20: the plugin cannot fire; the run warns with the numbers."""
    metrics = run_experiment(load_config("bench/pmnist_naive", [
        *QUICK, "stream.n_tasks=2", "stream.train_per_task=500", "stream.presentation=task_agnostic",
        "plugins.detection.window=30", f"run_dir={tmp_path / 'run'}"]))
    assert metrics["detection_events"] == []
    assert metrics["warnings"] == [
        "the detection plugin never detected a shift: 1 true task change(s) in 8 batches, shortest phase 4 batches; "
        "detector ema_window with window=30, k=3.0, std_floor=0.005, min_window=20. One network learned every "
        "task: lengthen the tasks or shorten the window"]
