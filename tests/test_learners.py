"""Baselines on real data: each one forgets less than fine-tuning; task-agnostic streams hide tasks."""
import dataclasses

import pytest
import torch

from cltrain.config import load_config
from cltrain.experiment import run_experiment
from cltrain.learners.base import LEARNERS, Learner
from conftest import QUICK

# 4 permuted-MNIST tasks, 3 epochs of 2,000 images each: enough steps for fine-tuning to forget. Measured (seed 0):
# forgetting 0.079 fine-tuning; 0.027 EWC, 0.045 online EWC, 0.031 SI, 0.001 replay. With 3 tasks online EWC's
# margin was 0.058 against 0.75 * 0.073: too thin to tell a method from seed noise.
SHORT = [*QUICK, "stream.n_tasks=4", "trainer.epochs_per_task=3"]


@pytest.fixture(scope="module")
def finetune_forgetting(tmp_path_factory):
    run = tmp_path_factory.mktemp("ft") / "run"
    metrics = run_experiment(load_config("bench/pmnist_finetune", [*SHORT, f"run_dir={run}"]))
    assert metrics["forgetting"] > 0.05, "fine-tuning must forget here for the comparison to mean anything"
    return metrics["forgetting"]


@pytest.mark.parametrize("experiment, extra", [
    ("bench/pmnist_joint", []),
    ("bench/pmnist_ewc", []),
    ("bench/pmnist_ewc_online", []),
    ("bench/pmnist_si", ["learner.c=1000"]),  # SI's importance grows with training length; short run, larger c
    ("bench/pmnist_replay", []),
])
def test_baseline_forgets_less_than_finetuning(experiment, extra, finetune_forgetting, tmp_path):
    metrics = run_experiment(load_config(experiment, [*SHORT, *extra, f"run_dir={tmp_path / 'run'}"]))
    assert metrics["forgetting"] < 0.75 * finetune_forgetting, (experiment, metrics["forgetting"])


def test_ewc_helps_on_task_incremental_split_mnist(tmp_path):
    common = [*QUICK, "stream.n_tasks=5", "stream.scenario=task_incremental", "trainer.epochs_per_task=2"]
    ft = run_experiment(load_config("bench/split_mnist_finetune", [*common, f"run_dir={tmp_path / 'ft'}"]))
    ewc = run_experiment(load_config("bench/split_mnist_ewc", [*common, f"run_dir={tmp_path / 'ewc'}"]))
    assert ft["forgetting"] > 0.02
    assert ewc["forgetting"] < ft["forgetting"]
    assert ewc["acc"] > 0.9  # two-way decisions within a task: easy when the task id masks the head


@LEARNERS.register("_spy_for_tests")
class Spy(Learner):
    """Records what reaches the learner."""

    seen_ids: list = []
    hooks: list = []

    def step_outputs(self, batch, batch_idx):
        Spy.seen_ids.append(batch.t)
        return super().step_outputs(batch, batch_idx)

    def predict(self, x, t):
        Spy.seen_ids.append(t)
        return super().predict(x, t)

    def on_task_start(self, task_id):
        Spy.hooks.append(("start", task_id))

    def on_task_end(self, task_id, samples):
        Spy.hooks.append(("end", task_id))


def test_task_agnostic_stream_never_shows_task_ids_or_boundaries(tmp_path):
    Spy.seen_ids.clear(), Spy.hooks.clear()
    cfg = load_config("bench/pmnist_naive", [*QUICK, "stream.presentation=task_agnostic",
                                             "learner.name=_spy_for_tests", f"run_dir={tmp_path / 'a'}"])
    metrics = run_experiment(cfg)
    assert Spy.seen_ids and all(t is None for t in Spy.seen_ids)
    assert Spy.hooks == []
    assert len(metrics["acc_matrix"]) == 3  # the metrics still know the boundaries
    # ...while a task-aware run of the same stream does show them
    Spy.seen_ids.clear()
    run_experiment(dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, presentation="task_aware"),
                                       run_dir=str(tmp_path / "b")))
    assert all(isinstance(t, torch.Tensor) for t in Spy.seen_ids)
    assert Spy.hooks == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("start", 2), ("end", 2)]


def test_task_agnostic_run_is_one_fit_and_matches_task_aware_finetuning(tmp_path):
    """Fine-tuning ignores task ids, so hiding them (one long fit) must not change a single number."""
    aware = run_experiment(load_config("bench/pmnist_naive", [*QUICK, f"run_dir={tmp_path / 'a'}"]))
    blind = run_experiment(load_config("bench/pmnist_naive", [*QUICK, "stream.presentation=task_agnostic",
                                                                f"run_dir={tmp_path / 'b'}"]))
    assert blind["acc_matrix"] == aware["acc_matrix"]
