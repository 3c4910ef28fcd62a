"""TAME on real MNIST: batched expert scoring, a recurring task, no task ids, exact resume, the buffers."""
import json
import shutil

import pytest
import torch

from conftest import TAME_RECURRING as RECURRING, results
from cltrain.config import OptimConfig, load_config
from cltrain.experiment import run_experiment
from cltrain.learners.base import LEARNERS
from cltrain.learners.tame import TAME, TAMEConfig
from cltrain.nn.lenet import LeNet5
from cltrain.plugins.pruning import global_magnitude_prune
from cltrain.priority_buffer import PriorityBuffer, water_fill_quota
from cltrain.run import RunFolder
from cltrain.streams.base import STREAMS
from cltrain.streams.loader import PhaseLoader, Segment

pytestmark = pytest.mark.usefixtures("one_thread")


@LEARNERS.register("_tame_spy_for_tests")
class TAMESpy(TAME):
    """TAME that records the task ids reaching it (training batches and predictions)."""

    seen: list = []

    def training_step(self, batch, batch_idx):
        TAMESpy.seen.append(batch.t)
        return super().training_step(batch, batch_idx)

    def predict(self, x, t):
        TAMESpy.seen.append(t)
        return super().predict(x, t)


@pytest.fixture(scope="module")
def recurring(tmp_path_factory):
    """One uninterrupted run, keeping a copy of its checkpoint after phase 2 (of 3) for the resume test."""
    run = tmp_path_factory.mktemp("tame") / "run"
    saved = {}
    original = RunFolder.save_checkpoint

    def save_and_keep(self, state, phase):
        original(self, state, phase)
        if phase == 1:
            saved["phase1"] = self.path / "checkpoints" / "phase1.pt"
            shutil.copy(self.last_checkpoint, saved["phase1"])

    TAMESpy.seen.clear()
    cfg = load_config("tame/split_mnist", [*RECURRING, "learner.name=_tame_spy_for_tests", f"run_dir={run}"])
    RunFolder.save_checkpoint = save_and_keep
    try:
        metrics = run_experiment(cfg)
    finally:
        RunFolder.save_checkpoint = original
    return {"metrics": metrics, "run": run, "cfg": cfg, "checkpoint": saved["phase1"], "seen": list(TAMESpy.seen)}


def test_recurring_task_switches_back_to_its_expert(recurring):
    m = recurring["metrics"]
    assert [e["kind"] for e in m["shift_events"]] == ["spawn", "recur"], m["shift_events"]
    assert m["shift_events"][1]["to"] == 0  # back to task 0's expert
    assert m["n_experts"] == 2 and m["n_true_tasks"] == 2
    assert m["task_to_expert"] == {"0": 0, "1": 1}
    assert m["tame_detection_missed"] == 0 and m["tame_detection_false"] == 0
    assert max(m["tame_detection_delays"]) <= 2
    # this small stream, seed 0: routing 0.884, strict 0.799 (seeds 1-3: routing 0.898-0.923, strict 0.705-0.835)
    assert m["routing_acc"] > 0.85 and m["strict_acc"] > 0.75


def test_experts_and_selector_are_pruned(recurring):
    m = recurring["metrics"]
    assert all(abs(s - 0.98) < 1e-3 for s in m["expert_weight_sparsity"])
    assert abs(m["selector_weight_sparsity"] - 0.5) < 1e-3
    assert m["nonzero_params"] < 0.25 * m["total_params"]


def test_learner_never_receives_task_ids(recurring):
    assert len(recurring["seen"]) > 288  # 3 phases x 96 training batches, plus evaluation calls
    assert all(t is None for t in recurring["seen"])


def test_resume_from_a_mid_run_checkpoint_ends_identically(recurring, tmp_path):
    full = recurring["metrics"]
    run = tmp_path / "resumed"
    shutil.copytree(recurring["run"], run)
    shutil.copy(recurring["checkpoint"], run / "checkpoints" / "last.pt")  # rewind to the end of phase 2
    (run / "metrics.json").unlink()
    cfg = load_config("tame/split_mnist", [*RECURRING, "learner.name=_tame_spy_for_tests", f"run_dir={run}",
                                           "resume=true"])
    resumed = run_experiment(cfg)
    assert len(resumed["phase_wall_time_s"]) == 3
    assert results(resumed) == results(full)


def _batch():
    cfg = load_config("tame/split_mnist", ["stream.train_per_task=300", "stream.test_per_task=10"])
    stream = STREAMS.get("split")(cfg)
    task = stream.tasks[1]
    seg = Segment(0, task.train_idx, torch.full_like(task.train_idx, 1), 1)
    return next(iter(PhaseLoader(stream, [seg], 128, seed=0, hide_task_ids=True)))


def test_batched_expert_scoring_equals_scoring_each_expert():
    torch.manual_seed(0)
    factory = lambda: LeNet5(1, 28, 10)  # noqa: E731
    learner = TAME(factory(), OptimConfig(), TAMEConfig(), None, factory)
    for _ in range(3):
        learner._spawn()
    global_magnitude_prune(learner.experts[1], 0.9)  # a pruned expert stacks like any other
    batch = _batch()
    assert batch.t is None
    batched = learner.score_experts(batch.x, batch.y)
    looped = learner.score_experts_loop(batch.x, batch.y)
    assert batched.shape == (4,)
    assert torch.allclose(batched, looped, atol=1e-5), (batched, looped)
    assert len(set(batched.tolist())) == 4  # distinct experts, distinct losses: the stacking is not a no-op


def test_priority_buffer_balances_groups_and_keeps_each_sample_once():
    buf = PriorityBuffer(capacity=60, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=gen)
    group = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(90, dtype=torch.long),
                       torch.full((10,), 2, dtype=torch.long)])
    for _ in range(2):  # a second epoch over the same samples adds nothing new
        for i in range(0, 400, 50):
            buf.add(x[i:i + 50], group[i:i + 50], group[i:i + 50], tag=group[i:i + 50])
    counts = buf.group_counts()
    assert counts == {0: 25, 1: 25, 2: 10}  # water-filling: the small group keeps all, the rest share equally
    held, _, _ = buf.contents()
    assert torch.unique(held, dim=0).shape[0] == 60  # no duplicates
    # within a group the kept samples are those of highest priority (a uniform sample of the group)
    p = buf.priorities(x[:300])
    kept = buf.priorities(held[buf.contents()[2] == 0])
    assert torch.equal(kept.sort(descending=True).values, p.sort(descending=True).values[:25])
    assert int(water_fill_quota(torch.tensor([300, 90, 10]), 60)) == 25
    buf.clear()
    assert len(buf) == 0


def test_a_detector_that_never_fires_warns_with_the_numbers(tmp_path, capsys):
    """Tasks of 4 batches against a window of 100 losses: no shift is ever declared, so one expert learns every
    task; the run says so at the end and records it, instead of reporting one expert without comment."""
    run = tmp_path / "run"
    metrics = run_experiment(load_config("tame/split_mnist", [
        *RECURRING, "stream.train_per_task=500", "trainer.epochs_per_task=1", "learner.window=100",
        f"run_dir={run}"]))
    assert metrics["shift_events"] == [] and metrics["n_experts"] == 1
    [warning] = metrics["warnings"]
    assert "TAME never detected a shift: 2 true task change(s) in 12 batches, shortest phase 4 batches" in warning
    assert "window=100" in warning
    assert f"[cltrain] warning: {warning}" in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["warnings"] == [warning]


def _tame_run(tmp_path, name, monkeypatch, evaluate):
    """A short recurring-task TAME run with ContinualTrainer.evaluate replaced; returns the learner."""
    from cltrain.trainer import ContinualTrainer

    kept = {}
    original_finish = ContinualTrainer._finish

    def finish(self):
        kept["learner"] = self.learner
        return original_finish(self)

    monkeypatch.setattr(ContinualTrainer, "evaluate", evaluate)
    monkeypatch.setattr(ContinualTrainer, "_finish", finish)
    run_experiment(load_config("tame/split_mnist", [*RECURRING, "trainer.epochs_per_task=4",
                                                    f"run_dir={tmp_path / name}"]))
    return kept["learner"]


def test_training_is_invariant_to_the_boundary_evaluations(tmp_path, monkeypatch):
    """Evaluating at a boundary (temporary selectors, routing, every expert's forward) must not change what TAME
    learns: the same shift events, loss trace and experts with evaluation disabled or done twice."""
    from cltrain.distributed import module_digest
    from cltrain.trainer import ContinualTrainer

    original = ContinualTrainer.evaluate
    twice = lambda self, trainer: (original(self, trainer), original(self, trainer))[1]  # noqa: E731
    disabled = lambda self, trainer: [0.0] * len(self.stream.tasks)  # noqa: E731
    runs = [_tame_run(tmp_path, name, monkeypatch, ev) for name, ev in
            (("normal", original), ("twice", twice), ("disabled", disabled))]
    normal = runs[0]
    assert len(normal.events) == 2  # the run has shifts to get wrong
    for other in runs[1:]:
        assert other.events == normal.events
        assert other.trace["loss"] == normal.trace["loss"] and other.trace["expert"] == normal.trace["expert"]
        assert module_digest(other.experts) == module_digest(normal.experts)
        assert module_digest(other.selector) == module_digest(normal.selector)


def test_pruning_loss_and_forgetting_after_pruning_are_reported_apart(recurring):
    m = recurring["metrics"]
    before, after = m["per_task_acc_before_prune"], m["per_task_acc_after_prune"]
    assert len(before) == len(after) == len(m["per_task_final_expert_acc"]) == 2
    assert before != after  # the dense and the pruned snapshots are different weights (98 % of them zeroed)
    assert m["pruning_loss"] == pytest.approx(sum(b - a for b, a in zip(before, after)) / 2)
    # no expert trains after its last pruning here (task 1's expert is never active again; task 0's is pruned
    # when the stream ends), so the accuracy right after pruning is the expert's final one
    assert after == m["per_task_final_expert_acc"] and m["expert_drift_after_pruning"] == 0
    # order [0, 1, 0]: task 1 is the only task not trained in the last phase; measured on the routed accuracy
    assert m["forgetting_after_pruning"] == pytest.approx(after[1] - m["acc_matrix"][-1][1])
    assert m["routing_loss"] == pytest.approx(sum(a - r for a, r in zip(after, m["acc_matrix"][-1])) / 2)
