"""DDP on CPU with gloo and 2 processes (Lightning's launcher), against the single-process run."""
import json
import signal

import pytest

from conftest import QUICK, TAME_RECURRING, results, run_cli, signal_mid_phase

# 2,001 images: the last batch of each pass has 81 rows, split 41/40 between the ranks (the ragged case).
JOB = ("fit", "bench/pmnist_replay", *QUICK, "stream.train_per_task=2001", "plugins.replay.capacity=300",
       "model.hidden=[100,100]", "trainer.epochs_per_task=2")


def single_and_ddp(tmp_path, *job: str) -> tuple[dict, dict]:
    """Run the job in one process and with DDP over 2 gloo processes; both runs' metrics.json."""
    single = run_cli(*job, f"run_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = run_cli(*job, "trainer.strategy=ddp", "trainer.devices=2", f"run_dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "MEMBER: 2/2" in ddp.stderr + ddp.stdout  # two real processes
    return tuple(json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("single", "ddp"))


def test_replay_under_ddp_matches_single_process(tmp_path):
    a, b = single_and_ddp(tmp_path, *JOB)
    # Both ranks add the same gathered global batches with the same generator: identical buffers,
    # and identical to the single-process buffer (the union of the ranks' shards is the global batch).
    assert b["replay_ranks_agree"] is True
    assert b["ddp_weights_agree"] is True and "ddp_weights_agree" not in a
    assert b["replay_buffer_digest"] == a["replay_buffer_digest"]
    assert b["replay_seen"] == a["replay_seen"] and b["steps"] == a["steps"]
    # Gradients are the mean of two 64-row halves instead of one 128-row mean: equal up to float rounding,
    # which training amplifies a little. Stated tolerance: 1.5 points of accuracy per entry.
    for row_a, row_b in zip(a["acc_matrix"], b["acc_matrix"]):
        assert row_b == pytest.approx(row_a, abs=0.015)
    # evaluation is split across ranks and summed, not duplicated: same test-set size as single-process
    assert b["acc_init"] == pytest.approx(a["acc_init"], abs=1e-9)


def test_ewc_with_facilitation_under_ddp(tmp_path):
    """Task hooks (EWC's Fisher) and plugins that reduce across ranks (facilitation, detection), under DDP."""
    job = ("fit", "bench/pmnist_ewc", *QUICK, "model.hidden=[100,100]", "plugins.facilitation.window=5",
           "trainer.epochs_per_task=3", "plugins.detection.window=20", "plugins.detection.min_window=10")
    a, b = single_and_ddp(tmp_path, *job)
    assert b["acc"] == pytest.approx(a["acc"], abs=0.015)
    # facilitation counts are summed over ranks: the same number of new-task samples per phase
    assert len(b["facilitation"]["acc_at_iters"]) == 3
    assert b["facilitation"]["acc_at_iters"] == pytest.approx(a["facilitation"]["acc_at_iters"], abs=0.05)
    # the detector watches the global batch's loss: both ranks raise the same alarms as the single process
    # (the EMA rule misses the first boundary here, where the window still holds a steeply falling loss)
    assert b["detection_ranks_agree"] is True
    assert b["detection_events"] == a["detection_events"] and len(a["detection_events"]) >= 1
    assert b["detection_false"] == a["detection_false"] == 0


def test_pruning_plugin_under_ddp_keeps_ranks_identical(tmp_path):
    """The pruning buffer is filled from the gathered global batch, so pruned + fine-tuned weights agree."""
    job = ("fit", "bench/pmnist_naive", *QUICK, "stream.n_tasks=2", "model.hidden=[100,100]",
           "plugins.pruning.sparsity=0.8", "plugins.pruning.capacity=500", "plugins.pruning.epochs=1")
    a, b = single_and_ddp(tmp_path, *job)
    # evaluation sums every rank's share of the test set: if the ranks' weights had drifted apart after
    # pruning, the DDP accuracy would not track the single-process one
    assert b["ddp_weights_agree"] is True  # fails when the ranks prune/fine-tune on different buffers
    assert b["acc"] == pytest.approx(a["acc"], abs=0.015)
    assert b["nonzero_params"] == a["nonzero_params"]


TAME_JOB = ("fit", "tame/split_mnist", *TAME_RECURRING)
DDP = ("trainer.strategy=ddp", "trainer.devices=2")


@pytest.fixture(scope="module")
def tame_runs(tmp_path_factory):
    """TAME on the recurring split-MNIST stream, single process and DDP: (single, ddp) metrics."""
    return single_and_ddp(tmp_path_factory.mktemp("tame_ddp"), *TAME_JOB)


def test_tame_under_ddp_takes_the_single_process_decisions(tame_runs):
    """TAME's pool grows during training: losses summed over ranks, gathered buffers, hand-averaged gradients."""
    a, b = tame_runs
    # the ranks agree with each other: buffers, decisions, and the experts as trained (before any broadcast)
    assert b["tame_ranks_agree"] is True and b["ddp_weights_agree"] is True
    # ...and with the single process: the same spawn and switch-back at the same batches
    assert b["shift_events"] == a["shift_events"] and len(a["shift_events"]) == 2
    assert b["task_to_expert"] == a["task_to_expert"] and b["n_experts"] == a["n_experts"] == 2
    # gradients of two half-batch means vs one mean: float rounding, amplified a little by training
    assert b["strict_acc"] == pytest.approx(a["strict_acc"], abs=0.03)
    assert b["routing_acc"] == pytest.approx(a["routing_acc"], abs=0.03)


def test_tame_under_ddp_preempted_mid_phase_resumes_identically(tame_runs, tmp_path):
    """SIGTERM to rank 0 only: rank 1 learns of it through the watcher's all-reduce, both stop at the same
    batch, rank 0 checkpoints the expert pool, and a DDP resume ends exactly as the uninterrupted DDP run."""
    _, full = tame_runs
    cut = tmp_path / "cut"
    code, out = signal_mid_phase([*TAME_JOB, *DDP, f"run_dir={cut}"], signal.SIGTERM)
    assert code == 1, out[-3000:]
    assert out.count("stopped by signal 15 after checkpointing at phase 2, batch") == 2, out[-3000:]  # both ranks
    assert not (cut / "metrics.json").exists()
    resumed = run_cli(*TAME_JOB, *DDP, f"run_dir={cut}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads((cut / "metrics.json").read_text())
    assert results(after) == results(full)
