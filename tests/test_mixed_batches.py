"""Mixed boundary batches (trainer.boundary_batches=mixed) on real MNIST: batches straddle task boundaries,
every row of the aligned stream is drawn exactly once, a resumed fit continues the same sequence, and the
trainer's phase ends fall on the straddling batches."""
import pytest
import torch

from conftest import run_cli
from cltrain.config import load_config
from cltrain.experiment import run_experiment
from cltrain.streams.base import STREAMS
from cltrain.streams.loader import PhaseLoader, Segment

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["stream.train_per_task=1000", "stream.test_per_task=200"]


def _segments(stream, epochs=2, batch=128):
    out = []
    for phase, task in enumerate(stream.tasks[:3]):
        idx = task.train_idx
        out.append(Segment(phase, idx, torch.full_like(idx, task.id),
                           Segment.batches_for(idx.numel(), batch, epochs, None)))
    return out


def _stream():
    return STREAMS.get("split")(load_config("tame/split_mnist", SMALL))


def _flat(batches):
    return torch.cat([b.y for b in batches]), torch.cat([b.x.flatten(1) for b in batches])


def test_mixed_batches_straddle_each_boundary_and_draw_the_aligned_rows():
    stream = _stream()
    aligned = list(PhaseLoader(stream, _segments(stream), 128, seed=0))
    segments = _segments(stream)
    mixed_loader = PhaseLoader(stream, segments, 128, seed=0, mixed=True)
    mixed = list(mixed_loader)
    assert len(mixed) == mixed_loader.boundaries[-1]
    for end in mixed_loader.boundaries[:-1]:  # the batch ending a phase holds both tasks
        tasks = set(mixed[end - 1].t.tolist())
        assert len(tasks) == 2, (end, tasks)
    assert all(len(b) == 128 for b in mixed[:-1])  # full batches until the stream ends
    assert any(len(b) < 128 for b in aligned[:-1])  # ... where the aligned ones end each pass short
    # the same rows in the same order, only cut elsewhere
    (ya, xa), (ym, xm) = _flat(aligned), _flat(mixed)
    assert torch.equal(ya, ym) and torch.equal(xa, xm)


def test_a_resumed_mixed_fit_continues_the_same_sequence():
    stream = _stream()
    whole = list(PhaseLoader(stream, _segments(stream), 128, seed=0, mixed=True))
    full = PhaseLoader(stream, _segments(stream), 128, seed=0, mixed=True)
    # resume at phase 1, 3 batches into it: offset = rows of phase 1 that phase 0's last batch took
    rest = _segments(stream)[1:]
    rest[0].offset = -_segments(stream)[0].n_samples(128) % 128
    rest[0].skip = 3
    resumed = list(PhaseLoader(stream, rest, 128, seed=0, mixed=True))
    start = full.boundaries[0] + 3
    assert len(resumed) == len(whole) - start
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(resumed, whole[start:]))


def test_mixed_batches_need_a_task_agnostic_stream(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("fit", "tame/split_mnist_ewc", "trainer.boundary_batches=mixed", f"run_dir={run}")
    assert proc.returncode == 2 and not run.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer.boundary_batches" in lines[0] and "task_agnostic" in lines[0], lines


def test_a_mixed_tame_run_ends_its_phases_on_the_straddling_batches(tmp_path):
    """Through the real trainer: the true shifts TAME is scored against are the batches that hold both tasks,
    and there are fewer steps than aligned (no short batch at each pass end)."""
    args = ["stream.n_tasks=5", "stream.train_per_task=1000", "stream.test_per_task=100", "trainer.epochs_per_task=3",
            "learner.window=20", "learner.selector_capacity=500", "learner.prune_capacity=500",
            "learner.expert_prune_epochs=1", "learner.selector_epochs=1", "learner.eval_selector_epochs=1",
            "trainer.progress_bar=false", "logger.wandb.mode=disabled", "trainer.checkpoint=false"]
    aligned = run_experiment(load_config("tame/split_mnist", [*args, f"run_dir={tmp_path / 'a'}"]))
    mixed = run_experiment(load_config("tame/split_mnist", [*args, "trainer.boundary_batches=mixed",
                                                             f"run_dir={tmp_path / 'm'}"]))
    stream = STREAMS.get("split")(load_config("tame/split_mnist", args))
    rows = [3 * t.n_train for t in stream.tasks]
    # the true shift is the first batch holding the next task's rows: the straddling one, batch floor(rows / 128)
    assert mixed["true_shifts"] == [sum(rows[:k + 1]) // 128 for k in range(4)]
    assert mixed["true_shifts"][-1] < aligned["true_shifts"][-1]
