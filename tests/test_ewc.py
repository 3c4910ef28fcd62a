"""EWC's Fisher: the Linear-layer shortcut equals per-sample gradients computed one by one; what the input scale
does to it on real MNIST."""
import pytest
import torch
import torch.nn.functional as F

from cltrain.config import OptimConfig
from cltrain.learners.ewc import EWC, EWCConfig, diagonal_fisher, linear_fisher, merge_pairs
from cltrain.nn.lenet import LeNet5
from cltrain.nn.mlp import MLP
from cltrain.streams.loader import Batch


def _samples(x, y):
    def batches(bs, n):
        for s in range(0, min(n, len(y)), bs):
            yield Batch(x[s:s + bs], y[s:s + bs], None, len(y[s:s + bs]))
    return batches


def _reference(model, x, y):
    out = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(len(y)):  # the definition, one sample at a time
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in model.named_parameters():
            out[k] += p.grad.pow(2)
    return {k: v / len(y) for k, v in out.items()}


def test_linear_shortcut_equals_the_definition():
    torch.manual_seed(0)
    learner = EWC(MLP(12, [9, 7], 4), OptimConfig(), EWCConfig())
    x, y = torch.randn(50, 12), torch.randint(0, 4, (50,))
    fast = linear_fisher(learner, _samples(x, y), 50, 16)
    ref = _reference(learner.model, x, y)
    assert fast is not None and set(fast) == set(ref)
    for k in ref:
        assert torch.allclose(fast[k], ref[k], atol=1e-6, rtol=1e-4), k


def test_conv_models_take_the_generic_path_and_agree():
    torch.manual_seed(0)
    learner = EWC(LeNet5(1, 28, 10), OptimConfig(), EWCConfig())
    x, y = torch.randn(12, 1, 28, 28), torch.randint(0, 10, (12,))
    assert linear_fisher(learner, _samples(x, y), 12, 4) is None
    fisher, ref = diagonal_fisher(learner, _samples(x, y), 12, 4), _reference(learner.model, x, y)
    for k in ref:
        assert torch.allclose(fisher[k], ref[k], atol=1e-6, rtol=1e-4), k


@pytest.mark.parametrize("model, shape", [(lambda: MLP(12, [9, 7], 4), (12,)),
                                          (lambda: LeNet5(1, 28, 10), (1, 28, 28))], ids=["linear-shortcut", "generic"])
def test_predicted_labels_take_the_models_arg_max(model, shape):
    """fisher_labels=predicted (the authors' code): the stored Fisher is the definition's with the model's own
    arg-max as the label, which differs from the empirical one wherever the model is wrong."""
    torch.manual_seed(0)
    learner = EWC(model(), OptimConfig(), EWCConfig(fisher_labels="predicted", fisher_samples=12, fisher_chunk=4))
    x = torch.randn(12, *shape)
    with torch.no_grad():
        predicted = learner.model(x).argmax(1)
    y = (predicted + 1) % 4  # every label wrong: the two Fishers must differ
    learner.on_task_end(0, _samples(x, y))
    want, empirical = _reference(learner.model, x, predicted), _reference(learner.model, x, y)
    for k in want:
        assert torch.allclose(learner.fishers[0][k], want[k], atol=1e-6, rtol=1e-4), k
    assert any(not torch.allclose(want[k], empirical[k], atol=1e-6, rtol=1e-4) for k in want)


def test_blank_pixels_carry_no_fisher_only_with_unit_pixels():
    """Why stream.pixels matters for regularisers (docs/results/baselines.md): with unit pixels a pixel that is blank
    in every image of a task is 0, so its first-layer weights get no gradient and no Fisher, and stay free for the
    next permutation; standardised, the same pixel is -0.42 and its weights are protected like any other."""
    from conftest import quick_config
    from cltrain.streams.base import STREAMS

    fishers = {}
    for pixels in ("unit", "standardised"):
        stream = STREAMS.get("permuted")(quick_config("bench/pmnist_naive", f"stream.pixels={pixels}", "seed=0"))
        idx = stream.tasks[0].train_idx[:256]
        x, y = stream.transform.for_task(stream.train.images[idx], 0), stream.train.labels[idx]
        blank = (stream.train.images[idx].view(256, -1) == 0).all(0)
        torch.manual_seed(0)
        learner = EWC(MLP(784, [32], 10), OptimConfig(), EWCConfig())
        fisher = linear_fisher(learner, _samples(x, y), 256, 64)
        first = next(k for k in fisher if k.endswith("weight"))  # the input layer's [32, 784] weight
        fishers[pixels] = fisher[first][:, blank]
    assert blank.sum() > 50  # MNIST's border
    assert torch.count_nonzero(fishers["unit"]) == 0
    assert (fishers["standardised"] > 0).float().mean() > 0.9


def test_merged_penalty_is_the_sum_over_tasks():
    """Offline EWC's penalty, merged into one quadratic, has the value and gradient of the per-task sum
    (a Fisher that is zero in places, as blank pixels' are, included); one pair is used as it is."""
    torch.manual_seed(0)
    learner = EWC(MLP(12, [9], 4), OptimConfig(), EWCConfig(lam=3.0))
    shapes = {k: p.shape for k, p in learner.model.named_parameters()}
    fishers = [{k: torch.rand(s) * (torch.rand(s) > 0.3) for k, s in shapes.items()} for _ in range(4)]
    anchors = [{k: torch.randn(s) for k, s in shapes.items()} for _ in range(4)]
    learner.set_extra_state({"fishers": fishers, "anchors": anchors})
    merged = learner.penalty()
    merged.backward()
    params = dict(learner.model.named_parameters())
    by_task = 1.5 * sum((f[k] * (params[k] - a[k]).pow(2)).sum() for f, a in zip(fishers, anchors) for k in f)
    grads = torch.autograd.grad(by_task, list(params.values()))
    assert torch.allclose(merged, by_task, rtol=1e-5)
    for g, p in zip(grads, params.values()):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-6)
    one = merge_pairs(fishers[:1], anchors[:1])
    assert one[0] is fishers[0] and one[1] is anchors[0] and one[2] == 0.0
    learner.set_extra_state({"fishers": fishers[:2], "anchors": anchors[:2]})  # a new state: merged again
    assert torch.allclose(learner.penalty(), 1.5 * sum((f[k] * (params[k] - a[k]).pow(2)).sum()
                                                       for f, a in zip(fishers[:2], anchors[:2]) for k in f))


def test_predicted_labels_respect_the_task_incremental_mask():
    """With a class mask (task-incremental heads) the predicted label is the best class of the sample's own task,
    never a masked one, and the Fisher differentiates the masked log-likelihood."""
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False, False], [False, False, True, True]])
    learner = EWC(MLP(12, [9], 4), OptimConfig(), EWCConfig(fisher_labels="predicted"), class_mask=mask)
    x, t = torch.randn(40, 12), torch.tensor([0, 1] * 20)
    with torch.no_grad():
        raw = learner.model(x)
        predicted = raw.masked_fill(~mask[t], float("-inf")).argmax(1)
    assert (raw.argmax(1) != predicted).any()  # somewhere the unmasked winner is another task's class
    y = torch.where(mask[t][torch.arange(40), 0], 1 - predicted, 5 - predicted)  # the other class of the task

    def batches(bs, n):
        for s in range(0, min(n, 40), bs):
            yield Batch(x[s:s + bs], y[s:s + bs], t[s:s + bs], len(y[s:s + bs]))

    fisher = diagonal_fisher(learner, batches, 40, 8, "predicted")
    want = {k: torch.zeros_like(p) for k, p in learner.model.named_parameters()}
    for i in range(40):
        learner.model.zero_grad()
        out = learner.model(x[i:i + 1]).masked_fill(~mask[t[i:i + 1]], float("-inf"))
        F.cross_entropy(out, predicted[i:i + 1]).backward()
        for k, p in learner.model.named_parameters():
            want[k] += p.grad.pow(2) / 40
    for k in want:
        assert torch.allclose(fisher[k], want[k], atol=1e-6, rtol=1e-4), k


def test_gamma_below_one_is_accepted_with_online_mode():
    from cltrain.config import load_config
    from cltrain.resolve import check_config

    online = check_config(load_config("bench/pmnist_ewc", ["learner.mode=online", "learner.gamma=0.9"]))
    assert online.method_cfg.gamma == 0.9 and online.method_cfg.mode == "online"


def _task(seed, n=40):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen)


@pytest.mark.parametrize("mode, gamma", [("offline", 1.0), ("online", 0.5)])
def test_fisher_peaks_record_the_stiffest_summed_importance_after_each_task(mode, gamma):
    """metrics.json's `fisher_peaks` (the stability tables read it instead of a checkpoint): after task k, the
    largest per-weight entry of the importance the penalty holds, the sum of the Fishers so far (online: decayed);
    kept through a checkpoint, and rebuilt for offline EWC from a checkpoint made before the figure existed."""
    torch.manual_seed(0)
    learner = EWC(MLP(12, [9], 4), OptimConfig(), EWCConfig(lam=3.0, mode=mode, gamma=gamma, fisher_samples=40))
    expected, running = [], None
    for seed in range(3):
        x, y = _task(seed)
        with torch.no_grad():
            for p in learner.model.parameters():  # another network state at each task end
                p.add_(0.1 * torch.randn_like(p))
        fisher = diagonal_fisher(learner, _samples(x, y), 40, 16)
        running = fisher if running is None else {k: gamma * running[k] + fisher[k] for k in fisher}
        expected.append(max(float(t.max()) for t in running.values()))
        learner.on_task_end(seed, _samples(x, y))
    assert learner.final_metrics(None)["fisher_peaks"] == pytest.approx(expected, rel=1e-5)
    assert expected[0] < expected[-1]  # the sum grows: the figure is not one task's peak
    state = learner.get_extra_state()
    resumed = EWC(MLP(12, [9], 4), OptimConfig(), EWCConfig(lam=3.0, mode=mode, gamma=gamma))
    resumed.set_extra_state(state)
    assert resumed.fisher_peaks == learner.fisher_peaks
    old = {k: v for k, v in state.items() if k != "fisher_peaks"}  # a checkpoint from before the figure
    resumed.set_extra_state(old)
    if mode == "offline":
        assert resumed.fisher_peaks == pytest.approx(expected, rel=1e-5)
    else:  # only the running Fisher is kept: the earlier peaks are lost, so the run records none (null)
        assert resumed.fisher_peaks is None
        resumed.on_task_end(3, _samples(*_task(3)))
        assert resumed.final_metrics(None)["fisher_peaks"] is None
