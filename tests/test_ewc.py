"""EWC's Fisher: the Linear-layer shortcut equals per-sample gradients computed one by one."""
import torch
import torch.nn.functional as F

from cltrain.config import OptimConfig
from cltrain.learners.ewc import EWC, EWCConfig, diagonal_fisher, linear_fisher
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
