"""Benchmark: how long the CLI takes to answer what needs no training (help, list, refused config), against the
import of torch and of Lightning alone. Each case is a fresh `python -m cltrain.cli` process; the median of
--repeats runs is printed in seconds, with its ratio to `import torch`.

    python scripts/bench_startup.py [--repeats 5]

The goal (issue 8): top-level keys answered in about a second, component sections within torch's import.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIT = ["-m", "cltrain.cli", "fit", "bench/pmnist_naive"]
CASES = [
    ("import torch (reference)", ["-c", "import torch"], 0),
    ("import pytorch_lightning (reference)", ["-c", "import pytorch_lightning"], 0),
    ("cltrain --help", ["-m", "cltrain.cli", "--help"], 0),
    ("cltrain list", ["-m", "cltrain.cli", "list"], 0),
    ("unknown top-level key", [*FIT, "trainer.epochs=3"], 2),
    ("bad top-level value", [*FIT, "trainer.batch_size=0"], 2),
    ("bad learner value", [*FIT, "learner.name=ewc", "learner.lam=-1"], 2),
    ("bad plugin value", [*FIT, "plugins.replay.capacity=0"], 2),
    ("refused combination (TAME, task-aware)", [*FIT, "learner.name=tame"], 2),
    ("unknown learner name", [*FIT, "learner.name=ewx"], 2),
]


def timed(args: list[str], expected: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != expected:
        raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}, expected {expected}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    torch_s = None
    print(f"{'case':42s} {'median s':>9s} {'min s':>7s} {'/ torch':>8s}")
    for title, args, expected in CASES:
        times = [timed(args, expected) for _ in range(repeats)]
        median = statistics.median(times)
        torch_s = torch_s or median
        print(f"{title:42s} {median:9.2f} {min(times):7.2f} {median / torch_s:8.2f}", flush=True)


if __name__ == "__main__":
    main()
