"""L2M / L2P (issue 10): the modulation pool, its selection rules, and the Meta-World stream around it.

Unit tests use a tiny decision transformer on synthetic windows (seconds); the rollout, dataset, resume and
DDP tests use real Meta-World environments and the real CLI.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli
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
