"""The run folder's plots, first call in a fresh process (as a run draws them), this checkout against another.

    python scripts/bench_plots.py --base /tmp/base [--rounds 3] [--tasks 10]

Each round starts one process per checkout (alternating, the order rotating) that imports `cltrain.plots` and
draws the schedule, accuracy-matrix and retention PNGs once, timing each with `time.process_time` (CPU seconds:
the first figure of a process pays for font lookup and, for a log axis with 10^k labels, building matplotlib's
mathtext parser). Prints the median [min-max] per plot and the ratio of the totals, round by round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLOTS = ("schedule", "acc_matrix", "retention")


def worker(tasks: int, out: Path) -> None:
    import time

    start = time.process_time()
    import numpy as np

    from cltrain import plots

    imported = time.process_time()
    rng = np.random.default_rng(0)
    R = np.tril(rng.random((tasks, tasks)) * 0.5 + 0.5)
    counts = np.diag(np.full(tasks, 54000.0))
    counts[np.tril_indices(tasks, -1)] = rng.integers(1, 5000, tasks * (tasks - 1) // 2)
    draws = {
        "schedule": lambda: plots.schedule_png(counts, out / "schedule_counts.png"),
        "acc_matrix": lambda: plots.acc_matrix_png(R, out / "acc_matrix.png", "bench: test accuracy (%)"),
        "retention": lambda: plots.retention_png(R, out / "retention.png", list(range(tasks)), "bench: retention"),
    }
    seconds = {"import": imported - start}
    for name in PLOTS:
        before = time.process_time()
        draws[name]()
        seconds[name] = time.process_time() - before
    print("RESULT " + json.dumps(seconds), flush=True)


def measure(code: Path, tasks: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory() as out:
        text = subprocess.run([sys.executable, __file__, "--worker", "--tasks", str(tasks), "--out", out], cwd=code,
                              env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout (e.g. `git archive REV | tar -x -C /tmp/base`)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.tasks, args.out)
        return 0
    rows = {"this checkout": REPO, **({"base": args.base.resolve()} if args.base else {})}
    results: dict[str, list[dict]] = {row: [] for row in rows}
    for r in range(args.rounds):
        names = list(rows)
        for row in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every round
            results[row].append(measure(rows[row], args.tasks))
    print(f"first plots of a fresh process, {args.tasks} tasks, CPU s, median [min-max] of {args.rounds} round(s)")
    print(f"{'row':14s} {'import':>20s} " + " ".join(f"{name:>20s}" for name in PLOTS) + f" {'plots total':>20s}")
    for row, runs in results.items():
        totals = [sum(run[name] for name in PLOTS) for run in runs]
        print(f"{row:14s} {spread([run['import'] for run in runs]):>20s} "
              + " ".join(f"{spread([run[name] for run in runs]):>20s}" for name in PLOTS) + f" {spread(totals):>20s}")
    if args.base:
        ratios = [sum(a[n] for n in PLOTS) / sum(b[n] for n in PLOTS)
                  for a, b in zip(results["this checkout"], results["base"])]
        print(f"plots total, this checkout / base, per round: {spread(ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
