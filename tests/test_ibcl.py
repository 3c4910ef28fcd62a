"""IBCL's pieces on small synthetic tensors: Gaussian layers, ELBO scale, barycenter, HDR sampling, the knowledge
base, the feature cache's checksum. Real-data runs of the method: tests/test_ibcl_run.py."""
import json

import pytest
import torch
import torch.nn.functional as F

from cltrain.config import OptimConfig
from cltrain.learners.ibcl import IBCL, IBCLConfig
from cltrain.learners.ibcl_credal import KnowledgeBase, barycenter, hdr_z, sample_region, w2_distance
from cltrain.nn.bayes import BayesLinear, BayesMLP, gaussian_kl
from cltrain.streams.loader import Batch


def _layer(seed=0):
    torch.manual_seed(seed)
    layer = BayesLinear(6, 4, prior_scales=[0.5, 1.5], sigma_init=0.3)
    with torch.no_grad():  # a posterior away from its prior, so the KL is far from zero
        layer.weight_mu.normal_(0, 0.7)
        layer.bias_mu.normal_(0, 0.7)
        layer.weight_rho.uniform_(-1.5, 0.5)
        layer.bias_rho.uniform_(-1.5, 0.5)
        layer.prior_weight_mu.normal_(0, 0.3)
    return layer


def test_kl_matches_closed_form_and_monte_carlo():
    layer = _layer()
    kl = layer.kl()
    for c in range(2):
        mu_q = torch.cat([layer.weight_mu[c].flatten(), layer.bias_mu[c]]).double()
        s_q = torch.cat([F.softplus(layer.weight_rho[c]).flatten(), F.softplus(layer.bias_rho[c])]).double()
        mu_p = torch.cat([layer.prior_weight_mu[c].flatten(), layer.prior_bias_mu[c]]).double()
        s_p = torch.cat([layer.prior_weight_sigma[c].flatten(), layer.prior_bias_sigma[c]]).double()
        closed = (torch.log(s_p / s_q) + (s_q ** 2 + (mu_q - mu_p) ** 2) / (2 * s_p ** 2) - 0.5).sum()
        assert float(kl[c].detach()) == pytest.approx(float(closed.detach()), rel=1e-5)
        q, p = torch.distributions.Normal(mu_q.detach(), s_q.detach()), torch.distributions.Normal(mu_p, s_p)
        w = q.sample((200_000,))
        mc = (q.log_prob(w) - p.log_prob(w)).sum(1).mean()
        assert float(kl[c].detach()) == pytest.approx(float(mc), rel=0.02)
    # the priors are buffers: no gradient can reach them (earlier posteriors stay detached)
    kl.sum().backward()
    assert not layer.prior_weight_mu.requires_grad and layer.prior_weight_mu.grad is None
    assert layer.weight_mu.grad is not None


def test_gaussian_kl_is_zero_only_at_the_prior():
    mu, s = torch.randn(10), torch.rand(10) + 0.1
    assert torch.allclose(gaussian_kl(mu, s, mu, s), torch.zeros(10), atol=1e-6)
    assert (gaussian_kl(mu + 0.1, s, mu, s) > 0).all()


def _learner(n_train=1000):
    torch.manual_seed(0)
    method = IBCLConfig(prior_scales=[0.2, 0.3])
    learner = IBCL(BayesMLP(5, [7], 1), OptimConfig(name="adam", lr=0.01), method)
    learner.n_train = n_train
    return learner


def test_elbo_scale_does_not_change_with_batch_size():
    learner = _learner(n_train=1000)
    x, y = torch.randn(8, 5), torch.randint(0, 2, (8,))
    losses = []
    for repeats in (2, 32):  # batches of 16 and 256 rows holding the same 8 samples equally often
        torch.manual_seed(3)  # the same weight draw per chain (one draw per step, not per sample)
        batch = Batch(x.repeat(repeats, 1), y.repeat(repeats), None, 8 * repeats)
        losses.append(float(learner.elbo_loss(batch).detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # and the KL enters as KL / N: doubling N halves its share
    torch.manual_seed(3)
    batch = Batch(x, y, None, 8)
    full = float(learner.elbo_loss(batch).detach())
    learner.n_train = 2000
    torch.manual_seed(3)
    half_kl = float(learner.elbo_loss(batch).detach())
    kl = float(learner.model.kl().sum().detach())
    assert full - half_kl == pytest.approx(kl / 1000 - kl / 2000, rel=1e-4)


def test_chains_share_initial_means_and_train_independently():
    learner = _learner()
    mu, sigma = learner.model.posterior()
    assert torch.equal(mu[0], mu[1]) and torch.allclose(sigma, torch.full_like(sigma, 0.05), atol=1e-6)
    prior_mu, prior_sigma = learner.model.prior()
    assert torch.allclose(prior_sigma[0], torch.full_like(prior_sigma[0], 0.2))
    assert torch.allclose(prior_sigma[1], torch.full_like(prior_sigma[1], 0.3))
    loss = learner.model.kl()[1]  # a loss of chain 1 alone moves no parameter of chain 0
    loss.backward()
    assert learner.model.layers[0].weight_mu.grad[0].abs().sum() == 0
    assert learner.model.layers[0].weight_mu.grad[1].abs().sum() > 0


def test_functional_forward_equals_the_mean_network():
    model = BayesMLP(5, [7, 3], 2, prior_scales=[1.0, 1.0])
    x = torch.randn(11, 5)
    mu, _ = model.posterior()
    assert torch.allclose(model.functional(x, mu), model(x, sample=False), atol=1e-6)


def test_barycenter_is_the_closed_form_and_minimises_the_w2_objective():
    torch.manual_seed(0)
    mu, sigma = torch.randn(6, 40), torch.rand(6, 40) + 0.05
    groups = torch.tensor([[0, 1, 2], [3, 4, 5]])
    w = torch.tensor([0.7, 0.3], dtype=torch.float64)
    m_hat, s_hat = barycenter(mu, sigma, groups, w)
    beta = torch.tensor([0.7 / 3] * 3 + [0.3 / 3] * 3)
    assert torch.allclose(m_hat, (beta[:, None] * mu).sum(0), atol=1e-6)
    assert torch.allclose(s_hat, (beta[:, None] * sigma).sum(0), atol=1e-6)

    def objective(m, s):  # sum_i beta_i W2^2(N(m, s), N_i)
        return float((beta * ((mu - m).pow(2).sum(1) + (sigma - s).pow(2).sum(1))).sum())
    best = objective(m_hat, s_hat)
    for _ in range(20):
        assert objective(m_hat + 0.01 * torch.randn(40), (s_hat + 0.01 * torch.randn(40)).abs()) > best


def test_region_has_coverage_one_minus_alpha_and_samples_independent_per_coordinate():
    mu, sigma, alpha = torch.tensor([0.5, -2.0]), torch.tensor([2.0, 0.1]), 0.1
    z = hdr_z(alpha)
    draws = torch.distributions.Normal(mu, sigma).sample((400_000,))
    inside = ((draws - mu).abs() <= z * sigma).float().mean(0)
    assert torch.allclose(inside, torch.full((2,), 1 - alpha), atol=0.003)

    gen = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(500), torch.rand(500) + 0.1
    samples = sample_region(mu, sigma, 0.01, 4000, gen)
    rel = (samples - mu) / (hdr_z(0.01) * sigma)  # position inside each coordinate's interval, in [-1, 1]
    assert rel.abs().max() <= 1 + 1e-5
    assert rel[0].std() > 0.2  # one model: coordinates sit at different places of their intervals
    corr = torch.corrcoef(rel[:, :20].T)
    assert (corr - torch.eye(20)).abs().max() < 0.08  # independent across coordinates
    # the draws follow the Gaussian restricted to the region: its std is close to sigma (z = 2.58 trims little)
    assert rel.mul(hdr_z(0.01)).std(0).mean() == pytest.approx(0.95, abs=0.03)


def test_knowledge_base_substitutes_within_d_and_round_trips(tmp_path):
    torch.manual_seed(0)
    mu, sigma = torch.randn(100), torch.rand(100)
    kb = KnowledgeBase()
    assert kb.add_or_substitute(mu, sigma, 0, 0, 0, d=0.05) == 0
    near = mu + 0.01  # RMS distance 0.01 per weight
    assert float(w2_distance(near, sigma, mu[None], sigma[None])[0]) == pytest.approx(0.01, rel=1e-4)
    assert kb.add_or_substitute(near, sigma, 1, 0, 1, d=0.05) == 0 and len(kb) == 1
    assert kb.add_or_substitute(near, sigma, 1, 1, 1, d=0.0) == 1 and len(kb) == 2  # d = 0 stores everything
    assert kb.add_or_substitute(mu + 1.0, sigma, 1, 2, 1, d=0.05) == 2
    kb.record_phase(0, [0, 0, 0])
    kb.record_phase(1, [0, 1, 2])
    path = tmp_path / "kb.pt"
    torch.save(kb.state(), path)
    back = KnowledgeBase.from_state(torch.load(path, weights_only=False))
    assert torch.equal(back.mu, kb.mu) and torch.equal(back.sigma, kb.sigma)
    assert (back.task, back.chain, back.phase, back.phase_extremes) == (kb.task, kb.chain, kb.phase, kb.phase_extremes)
    assert back.extremes_at(0) == {0: [0, 0, 0]} and back.size_at(0) == 1 and back.size_at(1) == 3


def test_learner_state_dict_round_trips_knowledge_base_and_predictions():
    a = _learner()
    a.on_task_end(0, None)
    with torch.no_grad():
        for p in a.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    a.on_task_end(1, None)
    b = _learner()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.kb.mu, b.kb.mu) and a.kb.phase_extremes == b.kb.phase_extremes
    x = torch.randn(50, 5)
    assert torch.equal(a.predict(x, None), b.predict(x, None))
    assert torch.equal(a.model.prior()[0], b.model.prior()[0])


def test_feature_cache_checksum_rejects_a_damaged_file(tmp_path, monkeypatch):
    from cltrain.streams import features

    monkeypatch.setenv("CLTRAIN_CACHE", str(tmp_path))
    record = {"dataset": "toy", "recipe_version": features.RECIPE_VERSION}
    path = features.cache_dir() / "toy.pt"
    train, test = torch.randn(5, 3).half(), torch.randn(2, 3).half()
    features._save_atomic(path, train, test, record)
    got = features._load_cached(path, record)
    assert torch.equal(got[0], train) and torch.equal(got[1], test)
    assert features._load_cached(path, {**record, "dataset": "other"}) is None  # another recipe: recompute
    meta = json.loads(path.with_suffix(".json").read_text())
    torch.save({"train": train + 1, "test": test}, path)  # contents no longer match the recorded SHA-256
    path.with_suffix(".json").write_text(json.dumps(meta))
    assert features._load_cached(path, record) is None


def test_cifar100_pairs_reader_on_a_small_file_in_torchvision_format(tmp_path):
    import pickle

    import numpy as np

    from cltrain.streams.paper_datasets import cifar100_pair_tasks

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        labels = [i % 6 for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * n}, handle)
    tasks = cifar100_pair_tasks(tmp_path, n_tasks=3)
    assert [t.name for t in tasks] == ["cifar100-0-vs-1", "cifar100-2-vs-3", "cifar100-4-vs-5"]
    first = tasks[1].train
    assert first.images.shape[1:] == (3, 32, 32) and len(first.labels) == 40 * 2 // 6 + 1
    assert set(first.labels.tolist()) == {0, 1}
    # the image of the first class-3 sample is the right row of the file, in CHW layout
    with open(folder / "train", "rb") as handle:
        raw = pickle.load(handle)
    row = [i for i in range(40) if i % 6 == 3][0]
    k = [i for i in range(40) if i % 6 in (2, 3)].index(row)
    assert torch.equal(first.images[k], torch.as_tensor(raw["data"][row]).view(3, 32, 32)) and first.labels[k] == 1
    with pytest.raises(Exception, match="not found"):
        cifar100_pair_tasks(tmp_path / "missing")


def test_celeba_attribute_reader_on_small_files_in_torchvision_format(tmp_path):
    from PIL import Image

    from cltrain.streams.paper_datasets import celeba_attribute_tasks

    folder = tmp_path / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = ["Smiling", "Young", "Male"]
    files = [f"{i:06d}.jpg" for i in range(1, 7)]
    table = {f: [1 if (i + j) % 2 else -1 for j in range(3)] for i, f in enumerate(files)}
    attr_lines = [str(len(files)), " ".join(names)] + [f"{f} " + " ".join(f"{v:2d}" for v in table[f]) for f in files]
    (folder / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    parts = [0, 0, 0, 1, 2, 2]
    (folder / "list_eval_partition.txt").write_text("\n".join(f"{f} {p}" for f, p in zip(files, parts)) + "\n")
    for i, f in enumerate(files):
        Image.new("RGB", (20, 24), (10 * i, 50, 200)).save(folder / "img_align_celeba" / f)
    tasks = celeba_attribute_tasks(tmp_path, attributes=["Young", "Male"], image_size=8)
    assert [t.name for t in tasks] == ["celeba-Young", "celeba-Male"]
    young = tasks[0]
    assert young.train.images.shape == (3, 3, 8, 8) and young.test.images.shape == (2, 3, 8, 8)
    assert young.train.labels.tolist() == [1 if (i + 1) % 2 else 0 for i in range(3)]
    assert young.test.labels.tolist() == [1 if (i + 1) % 2 else 0 for i in (4, 5)]
    assert int(young.train.images[2, 0, 0, 0]) == pytest.approx(20, abs=3)  # image 3's red channel (JPEG rounding)
    with pytest.raises(ValueError, match="valid: Smiling, Young, Male"):
        celeba_attribute_tasks(tmp_path, attributes=["Bald"])


def test_ibcl_config_names_exactly_the_registered_feature_streams():
    # ibcl.py keeps its own copy (config checks must not import the streams): it must follow the registry.
    import cltrain.streams  # noqa: F401  (registration)
    from cltrain.learners import ibcl
    from cltrain.streams import binary
    from cltrain.streams.base import STREAMS

    assert set(ibcl.FEATURE_STREAMS) == set(binary.FEATURE_STREAMS)
    assert all(name in STREAMS for name in ibcl.FEATURE_STREAMS)
