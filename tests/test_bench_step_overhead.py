"""scripts/bench_step_overhead.py's rows must train the same step, or their difference is not Lightning's cost."""

import logging

import torch

from conftest import load_script
from cltrain.streams.loader import Batch
from cltrain.trainer import NullProfiler


def test_learner_steps_as_lightnings_automatic_loop_did():
    """The Learner stepping itself (manual optimization) ends at the weights Lightning's automatic loop reaches:
    same gradients, one optimizer step per batch, momentum carried; a step that skipped, doubled or reordered
    (zero_grad after backward) would not. Also what makes the benchmark's two rows the same work."""
    bench = load_script("bench_step_overhead")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.manual_seed(1)
    x, y = torch.randn(128, 32), torch.randint(0, 10, (128,))
    trained = {}
    for name, make in (("automatic", bench.lightning_stepped), ("manual", bench.learner)):
        torch.manual_seed(0)  # the same initial Linear(32, 10) for both
        keep: list = []
        bench.lightning(make, NullProfiler(), Batch(x, y, t=None, n_new=128), 20, "cpu", keep=keep)
        trained[name] = keep[0].model
    torch.manual_seed(0)
    untrained = torch.nn.Linear(32, 10)
    assert not torch.allclose(trained["automatic"].weight, untrained.weight, atol=1e-3)  # it did train
    for a, m in zip(trained["automatic"].parameters(), trained["manual"].parameters()):
        assert torch.equal(m, a)  # bit for bit: the same operations in the same order
