"""A phase transformed once (trainer.materialise_mb) gives exactly the batches, and the run exactly the results,
of the per-batch path; the single-task transform gives exactly what the per-row-index transform gives."""
import numpy as np
import pytest
import torch

from cltrain.config import load_config
from cltrain.experiment import run_experiment
from cltrain.streams.base import STREAMS
from cltrain.streams.loader import MATERIALISE_CHUNK, MIN_PASSES, PhaseLoader, Segment, single_task
from cltrain.streams.schedules import phase_indices
from conftest import QUICK, quick_config, results

pytestmark = pytest.mark.usefixtures("one_thread")
BIG = 1 << 30
PASSES = MIN_PASSES["cpu"]  # epochs from which a CPU phase is materialised


def build(*overrides):
    cfg = quick_config("bench/pmnist_naive", *overrides)
    return STREAMS.get(cfg.stream.name)(cfg)


def counted(stream):
    """Count train_batch calls on this stream object (the real method still does the work)."""
    calls = []
    real = stream.train_batch

    def train_batch(base, task_ids, task=None):
        calls.append(base.numel())
        return real(base, task_ids, task)

    stream.train_batch = train_batch
    return calls


def batches(stream, segment, budget, batch_size=128, hide=False):
    return list(PhaseLoader(stream, [segment], batch_size, seed=0, hide_task_ids=hide, materialise_bytes=budget))


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y)  # bit for bit, not allclose
        assert (x.t is None and y.t is None) or torch.equal(x.t, y.t)
        assert (x.n_new, x.n_global) == (y.n_new, y.n_global)


@pytest.mark.parametrize("stream_name", ["permuted", "rotated", "split"])
def test_one_task_phase_materialised_equals_per_batch(stream_name):
    stream = build(f"stream.name={stream_name}", "stream.n_tasks=2" if stream_name == "split" else "stream.n_tasks=3",
                   "stream.train_per_task=5000")
    task = stream.tasks[1]
    segment = Segment(1, task.train_idx, torch.full_like(task.train_idx, 1),
                      n_batches=PASSES * -(-task.n_train // 128))
    calls = counted(stream)
    whole = batches(stream, segment, BIG)
    assert calls == [MATERIALISE_CHUNK, task.n_train - MATERIALISE_CHUNK]  # transformed once, in two chunks
    calls.clear()
    per_batch = batches(stream, segment, 0)
    assert len(calls) == segment.n_batches  # ... and here once per batch
    assert_same(whole, per_batch)


def test_mixed_task_phase_materialised_equals_per_batch():
    """A power-law phase mixes the new task with samples of every old one, in one segment."""
    stream = build("stream.n_tasks=4", "stream.train_per_task=3000")
    counts = np.array([500, 40, 900, 3000])
    idx, tids = phase_indices(stream, counts, 3, seed=0, nested=True)
    assert single_task(tids) is None
    segment = Segment(3, idx, tids, n_batches=PASSES * -(-idx.numel() // 100))
    calls = counted(stream)
    whole = batches(stream, segment, BIG, batch_size=100)
    assert len(calls) == -(-idx.numel() // MATERIALISE_CHUNK)
    assert_same(whole, batches(stream, segment, 0, batch_size=100))
    assert_same(batches(stream, segment, BIG, batch_size=100, hide=True),
                batches(stream, segment, 0, batch_size=100, hide=True))


def test_over_budget_or_short_phases_stay_per_batch():
    stream = build("stream.train_per_task=5000")
    task = stream.tasks[2]
    steps = PASSES * -(-task.n_train // 128)
    calls = counted(stream)
    segment = Segment(2, task.train_idx, torch.full_like(task.train_idx, 2), n_batches=steps)
    needed = task.n_train * (784 * 4 + 8)  # float inputs and int64 labels
    over = batches(stream, segment, needed - 1)
    assert len(calls) == 1 + steps  # the probe chunk, then per batch
    calls.clear()
    short_steps = (PASSES * task.n_train - 1) // 128  # draws one batch short of PASSES passes
    short = Segment(2, task.train_idx, torch.full_like(task.train_idx, 2), n_batches=short_steps)
    batches(stream, short, BIG)
    assert len(calls) == short_steps  # too few passes to pay: never transformed whole
    calls.clear()
    assert_same(batches(stream, segment, needed), over)
    assert len(calls) == 2  # exactly at the budget it fits


@pytest.mark.parametrize("stream_name", ["permuted", "rotated"])
def test_single_task_transform_equals_the_per_row_transform(stream_name):
    stream = build(f"stream.name={stream_name}", "stream.n_tasks=4")
    images = stream.train.images[:300]
    for task in range(4):
        ids = torch.full((300,), task, dtype=torch.long)
        assert torch.equal(stream.transform.for_task(images, task), stream.transform(images, ids))


def test_normalise_matches_the_written_formula_bit_for_bit():
    stream = build()
    images = stream.train.images[:500]
    t = stream.transform
    assert torch.equal(t.normalise(images), (images.float() / 255.0 - t.mean) / t.std)
    floats = images.float()
    before = floats.clone()
    t.normalise(floats)
    assert torch.equal(floats, before)  # float input is copied, never changed in place


def test_a_run_gives_the_same_metrics_materialised_or_per_batch(tmp_path, monkeypatch):
    import cltrain.streams.loader as loader

    made = []
    real = loader.materialise
    monkeypatch.setattr(loader, "materialise", lambda *a: made.append(a[1].numel()) or real(*a))
    common = [*QUICK, f"trainer.epochs_per_task={PASSES}", "stream.schedule=powerlaw", "stream.val_fraction=0.1"]
    runs = [results(run_experiment(load_config("bench/pmnist_naive", [*common, f"trainer.materialise_mb={mb}",
                                                                     f"run_dir={tmp_path / str(mb)}"])))
            for mb in (0, 1024)]
    assert runs[0] == runs[1]
    assert len(made) == 3  # every phase of the second run was materialised (the first run's never)
    assert len(runs[0]["acc_matrix"]) == 3 and "val_acc_matrix" in runs[0]


def test_train_and_eval_batches_are_the_rows_asked_for_permuted_as_written():
    """The data path's index_select / broadcast gather return what plain indexing and the task's permutation
    say: rows `base` of the training images (eval: the task's test images in order), pixels in perms[task]."""
    from cltrain.streams.loader import eval_batches

    stream = build("stream.n_tasks=3")
    t = stream.transform

    def written(images, task):  # the definition, with advanced indexing: pixel i of the output is perms[task][i]
        flat = images.reshape(images.shape[0], 1, -1)[:, :, t.perms[task]]
        return (flat.reshape(images.shape).float() / 255.0 - t.mean) / t.std

    base = torch.randperm(stream.train.labels.numel(), generator=torch.Generator().manual_seed(1))[:257]
    for task in range(3):
        x, y = stream.train_batch(base, torch.full_like(base, task), task)
        assert torch.equal(x, written(stream.train.images[base], task)) and torch.equal(y, stream.train.labels[base])
        xs, ys = zip(*eval_batches(stream, task, 700))
        idx = stream.tasks[task].test_idx
        assert torch.equal(torch.cat(xs), written(stream.test.images[idx], task))
        assert torch.equal(torch.cat(ys), stream.test.labels[idx])
    assert not torch.equal(written(stream.train.images[base], 1), written(stream.train.images[base], 2))
    mixed = torch.randint(0, 3, (base.numel(),), generator=torch.Generator().manual_seed(2))  # rows of 3 tasks
    x, _ = stream.train_batch(base, mixed)
    for task in range(3):
        rows = mixed == task
        assert torch.equal(x[rows], written(stream.train.images[base[rows]], task))


def test_rotated_batches_are_rotated_as_written():
    """The rotation's grid table (made once per image shape) gives bit for bit what building each batch's grid
    with affine_grid gives: one task's batches, mixed-task batches, and a second image shape."""
    import torch.nn.functional as F

    stream = build("stream.name=rotated", "stream.n_tasks=4")
    t = stream.transform

    def written(images, task_ids):  # the definition: each row's rotation matrix, its grid, bilinear sampling
        theta = t.angles[task_ids]
        cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
        affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(affine, list(images.shape), align_corners=False)
        out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (out / 255.0 - t.mean) / t.std

    images = stream.train.images[:257]
    for task in range(4):
        ids = torch.full((257,), task, dtype=torch.long)
        assert torch.equal(stream.transform.for_task(images, task), written(images, ids))
    mixed = torch.randint(0, 4, (257,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(t(images, mixed), written(images, mixed))
    padded = F.pad(images, (2, 2, 2, 2))  # another shape gets its own grids, not the 28x28 ones
    assert torch.equal(t(padded, mixed), written(padded, mixed))
    assert not torch.equal(written(images, mixed), written(images, (mixed + 1) % 4))
    t.load_state_dict({**t.state_dict(), "angles": t.angles.flip(0)})  # new angles: new grids, not the cached ones
    assert torch.equal(t(images, mixed), written(images, mixed))
