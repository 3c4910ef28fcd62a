"""scripts/bench_hot_paths.py's references must do the work cltrain does, or its ratios mean nothing."""

import numpy as np
import pytest
import torch

from conftest import load_script
from cltrain.config import RehearsalConfig
from cltrain.streams.schedules import PowerLawSchedule


def bench():
    return load_script("bench_hot_paths")


@pytest.mark.parametrize("n_tasks,n", [(2, 2000), (3, 60000), (5, 1000), (10, 60000)])
def test_hand_powerlaw_counts_are_cltrain_schedule(n_tasks, n):
    """The power-law loop draws, per phase and task, exactly as many rows as `stream.schedule=powerlaw`."""
    cltrain = PowerLawSchedule(RehearsalConfig()).counts(list(range(n_tasks)), [n] * n_tasks)
    assert np.array_equal(np.asarray(bench().powerlaw_counts(n_tasks, n)), cltrain)


def test_hand_reservoir_keeps_capacity_rows_of_the_stream():
    """The replay loop's reservoir fills to its capacity, then holds rows of the whole stream (not the last ones)."""
    res = bench().Reservoir(torch, "cpu", 50)
    torch.manual_seed(0)
    for step in range(20):
        rows = torch.arange(step * 10, step * 10 + 10)
        res.add(rows[:, None].float().expand(10, 784), rows)
        assert res.seen == (step + 1) * 10
    assert res.y.unique().numel() == 50 and bool((res.x[:, 0] == res.y.float()).all())
    assert int(res.y.min()) < 150  # older rows survive: a uniform sample of all 200, not a FIFO
    x, y = res.sample(128)
    assert x.shape == (128, 784) and bool(torch.isin(y, res.y).all())


def test_hand_rotation_is_cltrains_rotated_stream():
    """The rotated loop rotates each task's images as `stream.name=rotated` does (same angles, bilinear, zero
    fill, normalised after), on real MNIST rows."""
    from types import SimpleNamespace

    from conftest import quick_config
    from cltrain.streams.base import STREAMS

    args = SimpleNamespace(seed=0, train_per_task=100, tasks=4, worker_row="batch")
    data = bench().RotatedData(args, "cpu")
    stream = STREAMS.get("rotated")(quick_config("bench/pmnist_naive", "stream.name=rotated", "stream.n_tasks=4"))
    images = stream.train.images[:64]
    for task in range(4):
        ours = stream.transform.for_task(images, task).view(64, 784)
        assert torch.allclose(data.transform(images.view(64, 784), task), ours, atol=1e-4)
    assert not torch.allclose(data.transform(images.view(64, 784), 1), data.transform(images.view(64, 784), 2))
