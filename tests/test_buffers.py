import numpy as np
import torch
from scipy import stats

from cltrain.buffers import ReservoirBuffer


def test_reservoir_keeps_a_uniform_sample():
    """Every item of a 200-long stream should end up in a 20-slot reservoir with probability 20/200."""
    n_items, capacity, trials = 200, 20, 3000
    hits = np.zeros(n_items)
    for trial in range(trials):
        buf = ReservoirBuffer(capacity, seed=trial)
        items = torch.arange(n_items)
        for start in range(0, n_items, 32):  # batches of 32, the last one ragged
            chunk = items[start:start + 32]
            buf.add(chunk.float().unsqueeze(1), chunk)
        assert len(buf) == capacity and buf.seen == n_items
        kept = buf.y.numpy()
        assert len(set(kept.tolist())) == capacity  # no duplicates
        hits[kept] += 1
    expected = trials * capacity / n_items
    chi2 = ((hits - expected) ** 2 / expected).sum()
    p = stats.chi2.sf(chi2, df=n_items - 1)
    assert p > 0.001, f"inclusion counts are not uniform (chi2={chi2:.1f}, p={p:.2g})"
    # an early and a late item are kept equally often (the classic failure of naive FIFO buffers)
    assert abs(hits[:50].mean() - hits[-50:].mean()) < 0.1 * expected


def test_batched_insertion_equals_one_at_a_time():
    """Collisions inside a batch resolve as sequential insertion would: the later row wins."""
    a = ReservoirBuffer(8, seed=3)
    data = torch.arange(100)
    for start in range(0, 100, 25):
        a.add(data[start:start + 25, None].float(), data[start:start + 25])
    # one-at-a-time with the same random draws: replay the generator sample by sample
    draws = torch.rand(100, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    slots = [-1] * 8
    for i in range(100):
        if i < 8:
            slots[i] = i
        else:
            j = int(draws[i] * (i + 1))
            if j < 8:
                slots[j] = i
    assert a.y.tolist() == slots
    assert torch.equal(a.x[:, 0], a.y.float())  # each slot's inputs are its row's
    assert bool((a.t == -1).all())  # no task ids given
    b = ReservoirBuffer(8, seed=3)
    for start in range(0, 100, 25):
        rows = data[start:start + 25]
        b.add(rows[:, None].float(), rows, rows % 7)
    assert b.y.tolist() == slots and b.t.tolist() == [v % 7 for v in slots]


def test_state_round_trip_continues_identically():
    a = ReservoirBuffer(16, seed=1)
    a.add(torch.randn(40, 3), torch.arange(40))
    b = ReservoirBuffer(16, seed=99)
    b.load_state_dict(a.state_dict())
    more = torch.arange(40, 80)
    a.add(more[:, None].float().repeat(1, 3), more)
    b.add(more[:, None].float().repeat(1, 3), more)
    assert torch.equal(a.y, b.y)
    assert torch.equal(a.sample(10)[1], b.sample(10)[1])
