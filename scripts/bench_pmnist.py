"""Benchmark: `bench/pmnist_naive` through cltrain vs a plain PyTorch loop doing the same job, in one process.

Both load MNIST from the data root, train an MLP 784-512-512-10 with SGD (lr 0.01, momentum 0.9, batch 128)
for 1 epoch on each of 10 permuted-MNIST tasks, and test on all 10 tasks after every task. Prints both wall
times, their ratio and both ACCs.

    python scripts/bench_pmnist.py [--tasks 10] [--repeats 1] [key=value ...]   # extra cltrain overrides
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def plain_loop(root: str, n_tasks: int, seed: int) -> float:
    """The reference: what a researcher writes by hand, tensors in memory, whole-batch transforms."""
    torch.manual_seed(seed)
    train = torchvision.datasets.MNIST(root, train=True, download=False)
    test = torchvision.datasets.MNIST(root, train=False, download=False)
    xtr, ytr = train.data.view(-1, 784), train.targets
    xte, yte = test.data.view(-1, 784), test.targets
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.arange(784)] + [torch.randperm(784, generator=gen) for _ in range(n_tasks - 1)]
    prep = lambda x, p: (x[:, p].float() / 255.0 - 0.1307) / 0.3081  # noqa: E731
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    final = []
    for task in range(n_tasks):
        model.train()
        order = torch.randperm(len(ytr), generator=gen)
        for start in range(0, len(ytr), 128):
            rows = order[start:start + 128]
            loss = F.cross_entropy(model(prep(xtr[rows], perms[task])), ytr[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            final = [
                sum((model(prep(xte[s:s + 2000], perms[j])).argmax(1) == yte[s:s + 2000]).sum().item()
                    for s in range(0, len(yte), 2000)) / len(yte)
                for j in range(n_tasks)
            ]
    return sum(final) / len(final)


def cltrain_run(n_tasks: int, seed: int, overrides: list[str]) -> float:
    from cltrain.cli import _quiet_lightning
    from cltrain.config import load_config
    from cltrain.experiment import run_experiment

    _quiet_lightning()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("bench/pmnist_naive", [
            f"stream.n_tasks={n_tasks}", f"seed={seed}", f"run_dir={tmp}/run", "trainer.progress_bar=false",
            "logger.wandb.mode=disabled", *overrides,
        ])
        return run_experiment(cfg)["acc"]


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="alternate both runs this many times; best time wins")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    root = os.environ.get("CLTRAIN_DATA")
    if not root:
        print("set CLTRAIN_DATA to the folder holding MNIST/raw", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tasks} tasks", flush=True)
    plain, framework = [], []
    for _ in range(args.repeats):
        plain.append(timed(plain_loop, root, args.tasks, args.seed))
        framework.append(timed(cltrain_run, args.tasks, args.seed, args.overrides))
    (tp, acc_p), (tc, acc_c) = min(plain), min(framework)
    print(f"plain PyTorch loop: {tp:8.2f} s   ACC {acc_p:.4f}")
    print(f"cltrain           : {tc:8.2f} s   ACC {acc_c:.4f}")
    print(f"ratio cltrain/plain: {tc / tp:.3f}  (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
