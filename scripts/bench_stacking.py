"""Benchmark: the cost of stacking TAME's experts for one scoring step, before and after cltrain.nn.stacked.

Before: `torch.func.stack_module_state` on every step (a copy of every expert). After: `StackedModules`, which
keeps the stack and re-copies the experts whose weights changed; as in training, one expert (the active one)
changes between two scorings. LeNet-5 experts (tame/pmnist's network), 1, 5, 10, 20 experts, the two rows
alternating inside one process; µs per step, median over rounds.

    python scripts/bench_stacking.py [--device cpu|cuda] [--rounds 5] [--steps 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import stack_module_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cltrain.nn.lenet import LeNet5  # noqa: E402
from cltrain.nn.stacked import StackedModules  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {args.device}, {args.rounds} rounds of {args.steps} steps; µs per step")
    print(f"{'experts':>7} {'stack every step':>17} {'StackedModules':>15} {'ratio':>6}")
    for n in (1, 5, 10, 20):
        experts = [LeNet5(1, 28, 10).to(args.device) for _ in range(n)]
        active = next(experts[0].parameters())
        cache = StackedModules()
        cache(experts)

        def after() -> None:
            with torch.no_grad():
                active.mul_(1.0)  # the active expert's training step moved its weights (and version counter)
            cache(experts)

        rows = {"before": lambda: stack_module_state(experts), "after": after}
        times: dict[str, list[float]] = {name: [] for name in rows}
        for rnd in range(args.rounds):
            for name in (list(rows) if rnd % 2 == 0 else list(rows)[::-1]):
                start = time.perf_counter()
                for _ in range(args.steps):
                    rows[name]()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(1e6 * (time.perf_counter() - start) / args.steps)
        before, after_us = (statistics.median(times[k]) for k in ("before", "after"))
        print(f"{n:>7} {before:>17.0f} {after_us:>15.0f} {after_us / before:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
