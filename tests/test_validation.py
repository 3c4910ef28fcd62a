"""stream.val_fraction: a seeded validation split carved from each task's training data, scored every phase;
split MNIST's domain-incremental scenario."""
import csv
import json

import pytest
import torch

from cltrain.errors import ConfigError
from cltrain.report import find_runs, group_runs
from cltrain.selection import grid_curves, select
from cltrain.streams.base import STREAMS
from conftest import QUICK, results, run_cli, quick_config


def build(*overrides):
    cfg = quick_config("bench/pmnist_naive", *overrides)
    return STREAMS.get(cfg.stream.name)(cfg)


def test_val_split_is_carved_from_training_data_seeded_per_task():
    plain = build("seed=5")
    carved = build("seed=5", "stream.val_fraction=0.1")
    again = build("seed=5", "stream.val_fraction=0.1")
    other_seed = build("seed=6", "stream.val_fraction=0.1")
    assert not plain.has_val and carved.has_val
    for before, task in zip(plain.tasks, carved.tasks):
        train, val = set(task.train_idx.tolist()), set(task.val_idx.tolist())
        assert len(val) == 200 and len(train) == 1800  # 10 % of 2,000 training images
        assert not train & val  # the carved samples are never trained on
        assert train | val == set(before.train_idx.tolist())  # ... and come from that task's training data
        assert torch.equal(task.test_idx, before.test_idx)  # the test split is untouched
    assert all(torch.equal(a.val_idx, b.val_idx) for a, b in zip(carved.tasks, again.tasks))
    assert not torch.equal(carved.tasks[0].val_idx, other_seed.tasks[0].val_idx)
    # each task draws its own split (permuted tasks share the base images)
    assert not torch.equal(carved.tasks[0].val_idx, carved.tasks[1].val_idx)


def test_domain_incremental_split_mnist_relabels_by_position_in_task():
    stream = build("stream.name=split", "stream.n_tasks=5", "stream.scenario=domain_incremental",
                   "stream.train_per_task=null", "stream.test_per_task=null")
    original = build("stream.name=split", "stream.n_tasks=5", "stream.train_per_task=null",
                     "stream.test_per_task=null")
    assert stream.n_classes == 2 and stream.class_mask() is None
    for task, orig in zip(stream.tasks, original.tasks):
        assert task.classes == [0, 1] and task.meta["classes"] == orig.classes
        assert torch.equal(task.train_idx, orig.train_idx)
        digits = original.train.labels[task.train_idx]
        assert torch.equal(stream.train.labels[task.train_idx], digits - orig.classes[0])  # 2 -> 0, 3 -> 1, ...
        assert set(stream.test.labels[task.test_idx].tolist()) == {0, 1}


@pytest.mark.parametrize("override, message", [
    ("stream.val_fraction=1", "val_fraction"),
    ("stream.val_fraction=-0.1", "val_fraction"),
    ("stream.train_per_task=1", "train_per_task.*val_fraction"),
])
def test_bad_val_fraction_is_refused_up_front(override, message):
    with pytest.raises(ConfigError, match=message):
        quick_config("bench/pmnist_naive", "stream.val_fraction=0.2", override)


def test_run_records_val_matrix_beside_test_and_default_is_unchanged(tmp_path):
    job = ("fit", "bench/split_mnist_finetune", *QUICK, "stream.n_tasks=5", "stream.scenario=domain_incremental")
    assert run_cli(*job, "stream.val_fraction=0.2", f"run_dir={tmp_path / 'val'}").returncode == 0
    assert run_cli(*job, f"run_dir={tmp_path / 'plain'}").returncode == 0
    val, plain = results(tmp_path / "val"), results(tmp_path / "plain")
    assert "val_acc_matrix" not in plain  # val_fraction=0: the run's outputs are what they were
    V = val["val_acc_matrix"]
    assert len(V) == 5 and all(len(row) == 5 for row in V)
    assert val["val_acc"] == pytest.approx(sum(V[-1]) / 5)
    assert V != val["acc_matrix"]  # scored on other images than the test rows
    # same-task validation and test accuracy agree roughly (the same distribution, different images)
    assert abs(val["val_acc"] - val["acc"]) < 0.1
    assert all(V[k][k] > 0.8 for k in range(5))  # a task just trained is recognised on its held-out images


def test_sweep_then_select_by_validation_on_real_runs(tmp_path):
    """A real tiny sweep (EWC's lambda x 2 seeds on split MNIST), then `report --select val`: the pick is the
    lambda with the best mean validation ACC, and the table shows that lambda's mean *test* ACC."""
    root = tmp_path / "sweep"
    sweep = run_cli("sweep", "bench/split_mnist_ewc", *QUICK, "stream.n_tasks=2", "stream.scenario=domain_incremental",
                    "stream.train_per_task=1000", "stream.val_fraction=0.2", "learner.lam=0,1e5", "seed=0,1",
                    "--launcher", "local", f"run_dir={root}")
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    by_lam: dict[float, list[dict]] = {}
    for run in root.glob("*/metrics.json"):
        lam = float(run.parent.name.split("learner.lam=")[1].split("__")[0])
        by_lam.setdefault(lam, []).append(json.loads(run.read_text()))
    assert sorted(by_lam) == [0.0, 1e5] and all(len(v) == 2 for v in by_lam.values())
    mean = lambda runs, key: sum(m[key] for m in runs) / len(runs)  # noqa: E731
    best = max(by_lam, key=lambda lam: mean(by_lam[lam], "val_acc"))

    out = tmp_path / "table"
    plot = tmp_path / "grid.png"
    proc = run_cli("report", str(root), "--select", "val", "--tune", "learner.lam", "--out", str(out),
                   "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (curve,) = grid_curves(select(group_runs(find_runs([root])), ["learner.lam"]))
    assert curve.x == [0.0, 1e5] and curve.labels[curve.chosen] == str(best)
    assert curve.val == pytest.approx([mean(by_lam[lam], "val_acc") for lam in (0.0, 1e5)])
    assert curve.test == pytest.approx([mean(by_lam[lam], "acc") for lam in (0.0, 1e5)])
    (row,) = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert row["picked (by val ACC)"] == f"learner.lam={best}"
    assert float(row["ACC mean"]) == pytest.approx(mean(by_lam[best], "acc"))
    assert float(row["val ACC mean"]) == pytest.approx(mean(by_lam[best], "val_acc"))
    assert row["grid searched"] == "learner.lam ∈ {0.0, 100000.0}" and row["n"] == "2"
