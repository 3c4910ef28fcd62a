"""L2M / L2P (issue 10): the modulation pool, its selection rules, and the Meta-World stream around it.

Unit tests use a tiny decision transformer on synthetic windows (seconds); the rollout, dataset, resume and
DDP tests use real Meta-World environments and the real CLI.
"""
import json
import signal

import numpy as np
import pytest
import torch

from conftest import kill_after, results, run_cli
from cltrain.config import OptimConfig
from cltrain.learners.l2m import L2M, L2MConfig
from cltrain.learners.l2p import L2P, L2PConfig
from cltrain.nn.dt import DecisionTransformer
from cltrain.nn.modulators import PoolLoRA, Selection
from cltrain.streams.loader import Batch

S, A, K, BINS = 6, 2, 3, 8


def tiny_dt(seed=0):
    torch.manual_seed(seed)
    return DecisionTransformer(K, S, A, BINS, width=16, layers=2, heads=2)


def windows(n, shift=0.0, seed=0):
    """Synthetic windows x [n, K, S + 2 + A] (states around `shift`) and action targets [n, K, A]."""
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(n, K, S, generator=g) * 0.3 + shift
    acts = torch.randint(0, BINS, (n, K, A), generator=g)
    x = torch.cat([state, torch.rand(n, K, 1, generator=g), torch.ones(n, K, 1), acts.float()], dim=-1)
    return x, acts


def l2m(pool=4, lr=0.05, **kw):
    return L2M(tiny_dt(), OptimConfig(name="adam", lr=lr), L2MConfig(pool_size=pool, **kw))


def train(learner, x, y, steps):
    learner.train()
    opt = learner.configure_optimizers()
    for _ in range(steps):
        loss = learner.loss(learner.logits(x, None), Batch(x, y, None, len(y)))
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("modulator", ["lora", "ia3"])
def test_a_new_pool_entry_is_an_identity_modulation(modulator):
    frozen = tiny_dt().eval().requires_grad_(False)  # (kernels differ with and without autograd: compare like)
    learner = l2m(modulator=modulator).eval()
    x, _ = windows(8)
    assert torch.equal(learner.logits(x, None), frozen(x))
    # ... and a trained entry is not (the test can fail)
    learner.pool.keys.data[:] = 0  # irrelevant; change the modulators themselves
    for p in learner.model.parameters():
        if p.requires_grad:
            p.data.add_(0.5)
    assert not torch.allclose(learner.logits(x, None), frozen(x))


def test_only_selected_entries_get_gradients():
    learner = l2m(pool=6).train()
    x, y = windows(16)
    logits = learner.logits(x, None)
    chosen = set(learner.selection.idx.tolist())
    learner.loss(logits, Batch(x, y, None, 16)).backward()
    lora = learner.model.blocks[0].q.modulator
    a_rows = {i for i in range(6) if lora.A.grad[i].abs().sum() > 0}
    b_rows = {i for i in range(6) if lora.B.grad[i].abs().sum() > 0}
    key_rows = {i for i in range(6) if learner.pool.keys.grad[i].abs().sum() > 0}
    assert b_rows == key_rows == chosen and a_rows <= chosen  # A's gradient is 0 while B is still 0
    assert all(p.grad is None for n, p in learner.model.named_parameters() if ".base." in n or "emb" in n)


def test_frozen_backbone_is_bit_identical_after_training():
    learner = l2m()
    before = {k: v.clone() for k, v in learner.model.state_dict().items() if "modulator" not in k}
    x, y = windows(32)
    train(learner, x, y, 10)
    after = learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = [k for k in after if "modulator" in k and not torch.equal(after[k], l2m().model.state_dict()[k])]
    assert changed  # the selected entry did learn


def test_usage_penalty_steers_the_second_task_to_unused_entries():
    learner = l2m(pool=5)
    xa, ya = windows(32, shift=1.0, seed=1)
    learner.on_task_start(0)
    train(learner, xa, ya, 5)
    used = set(torch.nonzero(learner.pool.counts).flatten().tolist())
    learner.on_task_start(1)
    learner.train()
    learner.logits(xa, None)  # even the first task's own inputs: the penalty pushes them elsewhere
    assert not set(learner.selection.idx.tolist()) & used
    learner.eval()  # no penalty at evaluation: plain cosine picks the first task's entry again
    learner.logits(xa, None)
    assert set(learner.selection.idx.tolist()) <= used


def test_key_lr_moves_the_keys_at_their_own_rate_and_everything_else_at_optim_lr():
    """learner.key_lr: at a few hundred steps the keys (init U(-1, 1)) barely move at the model's lr."""
    x, y = windows(32, shift=1.0, seed=1)
    moved = {}
    for key_lr in (None, 0.1):
        learner = l2m(lr=1e-3, key_lr=key_lr)
        learner.on_task_start(0)
        opt = learner.configure_optimizers()
        keys = [p for g in opt.param_groups for p in g["params"] if p is learner.pool.keys]
        assert len(keys) == 1  # in exactly one group
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(learner.parameters()))
        assert [g["lr"] for g in opt.param_groups] == ([1e-3] if key_lr is None else [1e-3, 0.1])
        start = learner.pool.keys.detach().clone()
        train(learner, x, y, 3)
        moved[key_lr] = float((learner.pool.keys.detach() - start).abs().max())
    assert moved[None] <= 3 * 1e-3 * 1.01  # Adam: about lr per step and coordinate
    assert moved[0.1] > 30 * moved[None]


def test_retrieval_picks_the_trained_entry_on_its_own_task():
    learner = l2m(pool=8)
    (xa, ya), (xb, yb) = windows(64, shift=1.5, seed=1), windows(64, shift=-1.5, seed=2)
    entries = []
    for task, (x, y) in enumerate([(xa, ya), (xb, yb)]):
        learner.on_task_start(task)
        before = learner.pool.counts.clone()
        train(learner, x, y, 40)
        entries.append(int((learner.pool.counts - before).argmax()))
    assert entries[0] != entries[1]
    learner.eval()
    for (x, _), entry in zip([(xa, ya), (xb, yb)], entries):
        learner.logits(x, None)
        assert (learner.selection.idx == entry).float().mean() == 1.0


def test_oracle_selects_only_inside_the_tasks_slice():
    learner = l2m(pool=6, oracle=True, oracle_entries=2).eval()
    x, _ = windows(20)
    t = torch.arange(20) % 3
    learner.logits(x, t)
    assert torch.equal(learner.selection.idx // 2, t)


def test_batched_per_sample_modulation_equals_a_per_sample_loop():
    torch.manual_seed(0)
    sel = Selection()
    lora = PoolLoRA(16, 24, pool=5, rank=4, alpha=8.0, selection=sel)
    torch.nn.init.normal_(lora.B)
    x, y = torch.randn(7, 3, 16), torch.randn(7, 3, 24)
    sel.idx = torch.tensor([0, 4, 4, 2, 1, 0, 3])
    batched = lora(x, y)
    loop = torch.stack([y[i] + x[i] @ lora.A[e] @ lora.B[e] * 2.0 for i, e in enumerate(sel.idx.tolist())])
    assert torch.allclose(batched, loop, atol=1e-6)


def test_l2p_prepends_the_top_k_prompts_and_leaves_the_backbone_frozen():
    learner = L2P(tiny_dt(), OptimConfig(name="adam", lr=0.05), L2PConfig(pool_size=10, top_k=3))
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    x, y = windows(16)
    train(learner, x, y, 3)
    assert all(torch.equal(before[k], v) for k, v in learner.model.state_dict().items())
    assert int((learner.pool.counts > 0).sum()) >= 3
    frozen = tiny_dt().eval()
    assert not torch.allclose(learner.eval().logits(x, None), frozen(x))  # the prompts change the output


# ---- real Meta-World ------------------------------------------------------------------------------------
from cltrain.config import load_config  # noqa: E402
from cltrain.streams.metaworld import (action_accuracy, load_or_generate, metaworld_stream, rollout_success,  # noqa: E402
                                       scripted_episodes, tokenise)

SMALL = ["stream.options.tasks=pretrain", "stream.n_tasks=2", "stream.options.episodes=5", "stream.options.max_steps=40",
         "stream.options.test_episodes=1",
         "stream.options.eval_episodes=2", "model.options.width=32", "model.options.layers=2", "model.options.heads=2",
         "trainer.steps_per_task=15", "trainer.batch_size=32", "trainer.progress_bar=false", "logger.wandb.mode=disabled"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mw_cache")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A stand-in pre-trained checkpoint of the right shape (pre-training itself is the l2m/pretrain run)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("pre") / "dt.pt"
    torch.save(DecisionTransformer(5, 39, 4, 64, width=32, layers=2, heads=2).state_dict(), path)
    return path


def test_scripted_dataset_is_deterministic_for_a_seed_and_cached_with_a_checksum(tmp_path):
    a = scripted_episodes("reach-v3", 2, [0.0, 0.3], 30, seed=0)
    b = scripted_episodes("reach-v3", 2, [0.0, 0.3], 30, seed=0)
    c = scripted_episodes("reach-v3", 2, [0.0, 0.3], 30, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["obs"], c["obs"])
    assert a["obs"].shape == (60, 39) and a["act"].shape == (60, 4) and np.abs(a["act"]).max() <= 1
    cfg = load_config("l2m/cw", [*SMALL, f"stream.options.cache_dir={tmp_path}"])
    from cltrain.streams.metaworld import check_metaworld
    opts = check_metaworld(cfg)
    first = load_or_generate("reach-v3", opts)
    npz = next(tmp_path.glob("reach-v3-*.npz"))
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert meta["config"]["episodes"] == 5 and len(meta["sha256"]) == 64
    stamp = npz.stat().st_mtime_ns
    assert all(np.array_equal(first[k], load_or_generate("reach-v3", opts)[k]) for k in first)
    assert npz.stat().st_mtime_ns == stamp  # read from the cache, not regenerated
    with np.load(npz) as f:  # damage it: the checksum no longer matches, so it is regenerated
        damaged = {k: f[k] for k in f.files}
    damaged["rew"] = damaged["rew"] + 1
    np.savez(npz, **damaged)
    again = load_or_generate("reach-v3", opts)
    assert np.array_equal(again["rew"], first["rew"])


class ScriptedLearner(torch.nn.Module):
    """Plays Meta-World's scripted policy through the rollout path: logits peaked on the expert's action bins,
    read from the last state of each window (checks window building, decoding and success reporting)."""

    def __init__(self, name):
        super().__init__()
        from metaworld.policies import ENV_POLICY_MAP
        self.policy = ENV_POLICY_MAP[name]()
        self.register_buffer("device_probe", torch.zeros(()))

    @property
    def device(self):
        return self.device_probe.device

    def logits(self, x, t):
        acts = torch.tensor(np.stack([self.policy.get_action(s) for s in x[:, -1, :39].numpy()]), dtype=torch.float32)
        out = torch.zeros(x.shape[0], 64, x.shape[1], 4)
        out.scatter_(1, tokenise(acts, 64)[:, None, None, :].expand(-1, 1, x.shape[1], -1), 1.0)
        return out


def test_a_real_meta_world_rollout_runs_and_reports_success(cache):
    cfg = load_config("l2m/cw", [*SMALL, "stream.n_tasks=1", "stream.options.max_steps=150",
                                 f"stream.options.cache_dir={cache}"])
    stream = metaworld_stream(cfg)
    expert = rollout_success(stream, ScriptedLearner("reach-v3"), 0, 0, 1, seed=0)
    assert expert == [1.0]  # the scripted expert reaches the goal in both seeded episodes
    idle = ScriptedLearner("reach-v3")
    idle.logits = lambda x, t: torch.zeros(x.shape[0], 64, x.shape[1], 4).index_fill_(1, torch.tensor([32]), 1.0)
    assert rollout_success(stream, idle, 0, 0, 1, seed=0) == [0.0]  # standing still (action 0) never succeeds


def test_action_accuracy_scores_held_out_noise_free_episodes(cache):
    cfg = load_config("l2m/cw", [*SMALL, f"stream.options.cache_dir={cache}"])
    stream = metaworld_stream(cfg)
    for task in stream.tasks:  # episode 4 (noise 0, the last clean one) is held out; the rest is training data
        assert task.test_idx.numel() == 40 and not set(task.test_idx.tolist()) & set(task.train_idx.tolist())
    col = 39 + 2

    class Reader(ScriptedLearner):  # predicts the teacher-forced tokens it is given: a perfect model
        def logits(self, x, t):
            ids = x[..., col:].long().clamp(min=0)
            return torch.nn.functional.one_hot(ids, 64).permute(0, 3, 1, 2).float()

    assert action_accuracy(stream, Reader("reach-v3"), 16, 0, 1, 0) == [1.0, 1.0]
    constant = Reader("reach-v3")
    constant.logits = lambda x, t: torch.zeros(x.shape[0], 64, x.shape[1], 4).index_fill_(1, torch.tensor([0]), 1.0)
    assert max(action_accuracy(stream, constant, 16, 0, 1, 0)) < 0.5


def _metrics(run):
    return results(run)


def test_kill_and_resume_of_an_l2m_run_gives_identical_metrics(tmp_path, cache, pretrained):
    job = ("fit", "l2m/l2m", *SMALL, "learner.pool_size=6", f"model.options.pretrained={pretrained}",
           f"stream.options.cache_dir={cache}")
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = run_cli(*job, f"run_dir={full}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert kill_after([*job, f"run_dir={killed}"], "phase 1/2") == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before the kill; the test proves nothing"
    resumed = run_cli(*job, f"run_dir={killed}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(killed) == _metrics(full)
    m = _metrics(full)
    assert sum(u > 0 for u in m["pool_usage"]) >= 2  # two tasks, two entries (the penalty at work)
    # the pre-trained backbone is untouched by the whole run
    state = torch.load(full / "checkpoints" / "last.pt", weights_only=False)["learner"]
    pre = torch.load(pretrained)
    assert all(torch.equal(state[f"model.{k}"] if f"model.{k}" in state else state[f"model.{k.replace('.weight', '.base.weight').replace('.bias', '.base.bias')}"], v)
               for k, v in pre.items())


def test_missing_extra_or_checkpoint_stops_at_config_time_with_exit_2(tmp_path):
    out = run_cli("fit", "l2m/l2m", *SMALL, f"model.options.pretrained={tmp_path / 'none.pt'}",
                  f"run_dir={tmp_path / 'run'}")
    assert out.returncode == 2 and "cltrain fit l2m/pretrain" in out.stderr and not (tmp_path / "run").exists()
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "metaworld.py").write_text("raise ImportError")  # find_spec sees a module; make it look absent:
    (hidden / "sitecustomize.py").write_text(
        "import importlib.util as u\n_f = u.find_spec\nu.find_spec = lambda n, *a: None if n == 'metaworld' else _f(n, *a)\n")
    out = run_cli("fit", "l2m/l2m", *SMALL, f"run_dir={tmp_path / 'run'}", env={"PYTHONPATH": str(hidden)})
    assert out.returncode == 2 and "pip install -e '.[rl]'" in out.stderr and not (tmp_path / "run").exists()
    assert len(out.stderr.strip().splitlines()) == 1


def test_ddp_gives_the_single_process_selections(tmp_path, cache, pretrained):
    job = ("fit", "l2m/l2m", *SMALL, "learner.pool_size=6", f"model.options.pretrained={pretrained}",
           f"stream.options.cache_dir={cache}")
    single = run_cli(*job, f"run_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = run_cli(*job, "trainer.strategy=ddp", "trainer.devices=2", f"run_dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "MEMBER: 2/2" in ddp.stderr + ddp.stdout
    a, b = _metrics(tmp_path / "single"), _metrics(tmp_path / "ddp")
    assert b["pool_usage"] == a["pool_usage"]  # every step's selections, counted over both ranks' rows
    assert b["ddp_weights_agree"] is True


def test_image_stream_pool_on_a_frozen_mnist_mlp_reports_retrieval(tmp_path):
    """The same pool on permuted MNIST: LoRA entries on a frozen MLP's linear layers, retrieval accuracy out."""
    pre = run_cli("fit", "l2m/pmnist_pretrain", "stream.train_per_task=2000", "trainer.epochs_per_task=1",
                  "trainer.progress_bar=false", "logger.wandb.mode=disabled", f"run_dir={tmp_path / 'pre'}")
    assert pre.returncode == 0, pre.stderr[-2000:]
    ckpt = tmp_path / "pre" / "checkpoints" / "last.pt"
    run = run_cli("fit", "l2m/pmnist", "stream.n_tasks=2", "stream.train_per_task=1000", "stream.test_per_task=300",
                  "trainer.epochs_per_task=4", "optim.lr=0.003", f"model.options.pretrained={ckpt}", "trainer.progress_bar=false",
                  "logger.wandb.mode=disabled", f"run_dir={tmp_path / 'l2m'}")
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads((tmp_path / "l2m" / "metrics.json").read_text())
    assert set(m["task_entries"]) == {"0", "1"} and len(m["retrieval_acc"]) == 2
    assert min(m["retrieval_acc"]) > 0.8  # learner.key_lr in l2m/pmnist: the keys found their tasks' queries
    assert m["acc_matrix"][0][0] > m["acc_init"][0] + 0.1  # the entries learned task 0 on the frozen backbone
    before = torch.load(ckpt, weights_only=False)["learner"]
    after = torch.load(tmp_path / "l2m" / "checkpoints" / "last.pt", weights_only=False)["learner"]
    for key, value in before.items():  # model.1.weight -> model.1.base.weight: wrapped, bit-identical
        if key.startswith("model."):
            head, leaf = key.rsplit(".", 1)
            assert torch.equal(after[f"{head}.base.{leaf}"], value)


def test_the_pool_learners_config_names_exactly_the_registered_pool_hosts():
    # l2m.py keeps a literal copy (its config checks must not import torch): it must follow the registry.
    import cltrain.nn  # noqa: F401  (registration)
    from cltrain.learners.l2m import POOL_HOST_MODELS
    from cltrain.nn.modulators import POOL_HOSTS

    assert set(POOL_HOST_MODELS) == set(POOL_HOSTS)
