"""Pruning: the routine hits its target sparsity and the pruned network still classifies real MNIST."""
import pytest
import torch
import torch.nn.functional as F

from cltrain.config import load_config
from cltrain.experiment import run_experiment
from cltrain.nn.lenet import LeNet5
from cltrain.plugins.pruning import (accuracy, apply_masks, count_params, global_magnitude_prune, prunable,
                                     prune_and_finetune, weight_sparsity)
from cltrain.streams.base import STREAMS
from conftest import QUICK


pytestmark = pytest.mark.usefixtures("one_thread")


def _mnist(n_train=4000, n_test=1000):
    cfg = load_config("bench/pmnist_naive", ["stream.n_tasks=1", f"stream.train_per_task={n_train}",
                                             f"stream.test_per_task={n_test}"])
    stream = STREAMS.get("permuted")(cfg)  # task 0 is plain MNIST (identity permutation)
    task = stream.tasks[0]
    t = torch.zeros(n_train, dtype=torch.long)
    x = stream.transform(stream.train.images[task.train_idx], t)
    xt = stream.transform(stream.test.images[task.test_idx], t[:n_test])
    return x, stream.train.labels[task.train_idx], xt, stream.test.labels[task.test_idx]


def test_prune_to_98_percent_keeps_lenet_well_above_chance():
    torch.manual_seed(0)
    x, y, xt, yt = _mnist()
    model = LeNet5(1, 28, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for epoch in range(3):
        for i in range(0, len(y), 128):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    dense_acc = accuracy(model, xt, yt)
    assert dense_acc > 0.9
    masks = prune_and_finetune(model, x[:2000], y[:2000], sparsity=0.98, epochs=4, lr=0.01, seed=0)
    assert abs(weight_sparsity(model) - 0.98) < 1e-3  # global: over all conv/linear weights together
    total, nonzero = count_params(model)
    assert total == 61706 and nonzero < 0.05 * total
    assert accuracy(model, xt, yt) > 0.5  # chance is 0.1
    # masks keep a pruned weight at zero whatever an optimizer does to it
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    apply_masks(model, masks)
    assert abs(weight_sparsity(model) - 0.98) < 1e-3


def test_pruning_plugin_on_any_learner(tmp_path):
    """Fine-tuning an MLP, task-aware: pruned to 90% after each task, evaluated after pruning."""
    metrics = run_experiment(load_config("bench/pmnist_naive", [
        *QUICK, "stream.n_tasks=2", "trainer.epochs_per_task=3", "plugins.pruning.sparsity=0.9",
        "plugins.pruning.epochs=2", f"run_dir={tmp_path / 'run'}",
    ]))
    assert metrics["n_pruned"] == 2
    assert abs(metrics["weight_sparsity"] - 0.9) < 1e-3
    assert metrics["nonzero_params"] < 0.11 * metrics["total_params"]
    assert metrics["acc_matrix"][-1][1] > 0.5  # the pruned network still predicts the task it just learned


def test_global_pruning_zeroes_exactly_the_smallest_magnitudes_over_all_layers():
    torch.manual_seed(0)
    model = LeNet5(1, 28, 10)
    with torch.no_grad():  # layers on different scales: a per-layer rule would prune differently from a global one
        prunable(model)[2][1].weight.mul_(0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    flat = torch.cat([w.abs().flatten() for w in before.values()])
    n_pruned = round(0.7 * flat.numel())
    cutoff = flat.sort().values[n_pruned - 1]
    masks = global_magnitude_prune(model, 0.7)
    after = dict(model.named_parameters())
    assert sum(int((~m).sum()) for m in masks.values()) == n_pruned
    for name, w in before.items():
        pruned = ~masks[name]
        assert torch.all(w.abs()[pruned] <= cutoff) and torch.all(w.abs()[~pruned] >= cutoff)
        assert torch.all(after[name][pruned] == 0)
        assert torch.equal(after[name][~pruned], w[~pruned])  # survivors keep their values
    # layers end with different sparsities: the threshold is one for the whole network
    assert len({round(float((~m).float().mean()), 3) for m in masks.values()}) > 1
