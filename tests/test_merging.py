"""The merging methods (cltrain/merging/) on hand-made task vectors, and the merge learner's memory."""
from __future__ import annotations

import math

import pytest
import torch

from cltrain.config import component_config
from cltrain.merging import MERGERS, apply, task_vector
from cltrain.merging.base import size_bytes, stack, unstack


def merger(name: str, seed: int = 0, **options):
    cls = MERGERS.get(name)
    cfg = component_config(options, cls.Config, "merge") if cls.Config is not None else None
    return cls(cfg, seed)


def vec(values, split=2) -> dict[str, torch.Tensor]:
    """A task vector of two tensors ('a': the first `split` values, 'b': the rest as a column)."""
    t = torch.tensor(values, dtype=torch.float32)
    return {"a": t[:split].clone(), "b": t[split:].reshape(-1, 1).clone()}


def flat(v: dict[str, torch.Tensor]) -> list[float]:
    return stack([v])[0][0].tolist()


def random_model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 32, generator=g), "b": torch.randn(32, generator=g),
            "steps": torch.tensor(7)}  # a non-float entry: no task vector, kept from the base


def test_task_arithmetic_of_one_vector_at_lambda_1_is_the_expert():
    # float64 weights holding float32 values: expert - base is exact there, so the expert comes back bit for bit
    base32, expert32 = random_model(0), random_model(1)
    base = {k: v.double() if v.is_floating_point() else v for k, v in base32.items()}
    expert = {k: v.double() if v.is_floating_point() else v for k, v in expert32.items()}
    merged = apply(base, merger("task_arithmetic").merge([task_vector(expert, base)]), 1.0)
    assert all(torch.equal(merged[k], expert[k]) for k in expert)
    # in float32, (e - b) + b is e up to the one rounding of the subtraction: within one ulp of the larger value
    merged32 = apply(base32, merger("task_arithmetic").merge([task_vector(expert32, base32)]), 1.0)
    for k in ("w", "b"):
        ulp = torch.finfo(torch.float32).eps * torch.maximum(base32[k].abs(), expert32[k].abs())
        assert ((merged32[k] - expert32[k]).abs() <= ulp).all(), k
    assert torch.equal(merged32["steps"], base32["steps"])  # a non-float entry is the base's


def test_averaging_identical_models_returns_the_model():
    base, expert = random_model(2), random_model(3)
    tau = task_vector(expert, base)
    merged = apply(base, merger("average").merge([tau, tau, tau]), 1.0)
    for k in ("w", "b"):
        assert torch.allclose(merged[k], expert[k], rtol=0, atol=1e-6)
    # and averaging two different models is their midpoint
    other = random_model(4)
    mid = apply(base, merger("average").merge([tau, task_vector(other, base)]), 1.0)
    assert torch.allclose(mid["w"], (expert["w"] + other["w"]) / 2, atol=1e-6)


def test_ties_trim_elect_merge_on_a_hand_made_example():
    vectors = [vec([3, -1, 0.2, -2]), vec([-1, 4, -0.1, -3]), vec([2, -5, 0.3, 1])]
    # trim to the top half by magnitude: [3, 0, 0, -2], [0, 4, 0, -3], [2, -5, 0, 0]
    # elected signs (sums 5, -1, 0, -5): +, -, none, -
    # disjoint means: (3 + 2) / 2, -5 / 1, nothing agrees -> 0, (-2 - 3) / 2
    merged = merger("ties", density=0.5).merge(vectors)
    assert flat(merged) == [2.5, -5.0, 0.0, -2.5]
    assert merged["b"].shape == (2, 1)  # the layout survives the flattening


def test_dare_rescaling_keeps_the_expectation():
    n, density, value = 200_000, 0.2, 0.7
    tau = {"w": torch.full((n,), value)}
    out = merger("dare", seed=5, density=density).merge([tau])["w"]
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(value / density))  # survivors are divided by the density
    # Each entry is value/density with probability density, else 0: mean value, variance value^2 (1-d)/d.
    # The sample mean over n entries is within 5 standard errors of the expectation except with p < 1e-6.
    stderr = value * math.sqrt((1 - density) / density / n)
    assert abs(out.mean().item() - value) < 5 * stderr
    assert abs(kept.float().mean().item() - density) < 5 * math.sqrt(density * (1 - density) / n)
    # seeded: the same seed draws the same mask, another seed another one
    assert torch.equal(out, merger("dare", seed=5, density=density).merge([tau])["w"])
    assert not torch.equal(out, merger("dare", seed=6, density=density).merge([tau])["w"])


def test_breadcrumbs_drops_both_tails_per_layer():
    magnitudes = torch.arange(1, 101, dtype=torch.float32)
    signs = torch.where(torch.arange(100) % 3 == 0, -1.0, 1.0)
    tau = {"w": (magnitudes * signs)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]}
    out = merger("breadcrumbs", drop_low=0.1, drop_high=0.05).merge([tau])["w"]
    kept = out != 0
    assert sorted(out[kept].abs().tolist()) == list(range(11, 96))  # 1..10 and 96..100 are gone
    assert torch.equal(out[kept], tau["w"][kept])  # the rest is untouched
    # two vectors: masked separately, then summed
    out2 = merger("breadcrumbs", drop_low=0.1, drop_high=0.05).merge([tau, tau])["w"]
    assert torch.equal(out2, 2 * out)


def pcb_reference(vectors: list[list[float]], density: float) -> list[float]:
    """The paper's PCB scores and merge written entry by entry over plain floats (no tensors)."""
    n, p = len(vectors), len(vectors[0])

    def norm(xs):
        lo, hi = min(xs), max(xs)
        return [(x - lo) / (hi - lo) if hi > lo else 0.0 for x in xs]

    scores = []
    for i in range(n):
        intra = [math.exp(n * q) for q in norm([t * t for t in vectors[i]])]
        inter = [0.0] * p
        for j in range(n):
            for k, q in enumerate(norm([a * b for a, b in zip(vectors[i], vectors[j])])):
                inter[k] += math.exp(q)
        s = [a * b for a, b in zip(intra, inter)]
        cut = sorted(s, reverse=True)[max(1, round(density * p)) - 1]
        scores.append([x if x >= cut else 0.0 for x in s])
    return [sum(scores[i][k] * vectors[i][k] for i in range(n)) / sum(scores[i][k] for i in range(n))
            if any(scores[i][k] for i in range(n)) else 0.0 for k in range(p)]


def test_pcb_on_a_hand_made_example():
    raw = [[1.0, -0.5, 0.25, 2.0], [0.5, 1.5, -0.25, 1.0], [-1.0, 0.75, 0.5, 3.0]]
    merged = flat(merger("pcb", density=0.5).merge([vec(r) for r in raw]))
    expected = pcb_reference(raw, 0.5)
    assert merged == pytest.approx(expected, rel=1e-5)
    # the kept entries of each task are its 2 highest-scoring ones; parameter 3 (large and agreed on by all)
    # is kept everywhere, so it is a weighted mean of 2, 1 and 3: inside their range, pulled towards 3
    assert 2.0 < merged[3] < 3.0
    # identical vectors: every score is the same across tasks, so the merge returns the vector where kept
    same = flat(merger("pcb", density=1.0).merge([vec(raw[0])] * 3))
    assert same == pytest.approx(raw[0], rel=1e-6)


def test_stack_and_unstack_are_inverse():
    v = random_model(5)
    v.pop("steps")
    rows, layout = stack([v, v])
    back = unstack(rows[1], layout)
    assert all(torch.equal(back[k], v[k]) for k in v)


def test_the_method_choices_of_the_learner_are_the_registered_mergers():
    import dataclasses

    from cltrain.learners.merge import MergeConfig

    choices = next(f for f in dataclasses.fields(MergeConfig) if f.name == "method").metadata["choices"]
    assert sorted(choices) == MERGERS.names()


def _learner(method: str, lam: float = 1.0):
    from cltrain.config import OptimConfig
    from cltrain.learners.merge import Merge, MergeConfig
    from cltrain.nn.registry import MODELS
    from cltrain.config import ModelConfig
    import cltrain.nn  # noqa: F401

    model = MODELS.get("mlp")(ModelConfig(hidden=[64, 64]), (1, 28, 28), 10)
    return Merge(model, OptimConfig(), MergeConfig(method=method, lam=lam))


def _fake_task(learner, k: int) -> None:
    """A task's fine-tuning, as far as merging sees it: the weights moved away from the base."""
    learner.on_task_start(k)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) * 0.01)
    learner.on_task_end(k, samples=None)  # lam is fixed: no validation samples are read


def test_the_continual_merger_keeps_constant_memory_and_offline_merging_does_not():
    streaming, offline = _learner("running_average"), _learner("task_arithmetic")
    sizes = {"running": [], "offline": []}
    for k in range(6):
        _fake_task(streaming, k)
        _fake_task(offline, k)
        sizes["running"].append(size_bytes(streaming.merge_state()))
        sizes["offline"].append(size_bytes(offline.merge_state()))
    n_params = sum(p.numel() for p in streaming.model.parameters())
    assert sizes["running"] == [4 * n_params] * 6  # one merged vector, whatever the number of tasks
    assert sizes["offline"] == [4 * n_params * (k + 1) for k in range(6)]  # the measure does see growth
    # and the running state is the average of the task vectors the offline learner kept
    mean = merger("average").merge(offline.vectors)
    assert all(torch.allclose(streaming.fold_state["merged"][k], mean[k], atol=1e-7) for k in mean)


def test_adamerging_learns_coefficients_that_lower_the_entropy():
    """Two 'task vectors' of a linear classifier: one sharpens the predictions on the unlabelled inputs, one
    is noise. Entropy minimisation must raise the first's coefficient above its start and lower the entropy."""
    from cltrain.merging.adamerging import mean_entropy
    from cltrain.merging.base import MergeData

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    w_true = torch.randn(8, 4, generator=g)
    base = {"w": torch.zeros(8, 4)}
    sharpen, noise = {"w": w_true * 2.0}, {"w": torch.randn(8, 4, generator=g) * 0.01}
    data = MergeData(base, lambda w, x, t: x @ w["w"], [(x, torch.zeros(256, dtype=torch.long))])
    ada = merger("adamerging", granularity="task", coef_init=0.3, coef_steps=50, coef_lr=0.05)
    merged = ada.combine([sharpen, noise], data)
    assert ada.learned.shape == (2, 1) and ada.learned[0, 0] > 0.5  # moved up from 0.3
    start = mean_entropy(x @ (0.3 * sharpen["w"] + 0.3 * noise["w"]))
    assert mean_entropy(x @ merged["w"]) < start
    # the merged vector is exactly the learned weighted sum
    expected = ada.learned[0, 0] * sharpen["w"] + ada.learned[1, 0] * noise["w"]
    assert torch.allclose(merged["w"], expected)
    layer = merger("adamerging", granularity="layer", coef_steps=1)
    layer.combine([{"a": torch.ones(2), "b": torch.ones(3)}] * 3,
                  MergeData({"a": torch.zeros(2), "b": torch.zeros(3)},
                            lambda w, x, t: torch.stack([w["a"].sum() * x, w["b"].sum() * x], 1), [(x[:, 0], None)]))
    assert layer.learned.shape == (3, 2)  # one coefficient per task vector and tensor


def test_adamerging_entropy_is_finite_with_task_incremental_masks():
    from cltrain.merging.adamerging import mean_entropy

    logits = torch.tensor([[2.0, 0.5, float("-inf"), float("-inf")]], requires_grad=True)
    h = mean_entropy(logits)
    h.backward()
    p = torch.softmax(torch.tensor([2.0, 0.5]), 0)
    assert torch.isclose(h, -(p * p.log()).sum()) and torch.isfinite(logits.grad).all()
