"""Benchmark: cltrain's per-batch data path, this checkout against another, without a model.

Three measurements per process, each the best of --repeats, in wall and process CPU milliseconds:

  phase    one 60,000-row permuted-MNIST phase in shuffled batches of 128 through `Stream.train_batch` (row gather,
           the task's pixel permutation, normalisation): what a CPU run does per training batch at 1 epoch per task
  eval     one evaluation's input batches: every task's 10,000 test images in batches of 2,000 through
           `eval_batches` (what an accuracy-matrix row costs besides the forward passes)
  mixed    60,000 rows of random tasks (of 10) in batches of 128 through `Stream.train_batch` without a task:
           the per-row permutation gather of rehearsal phases that mix tasks (power-law schedules)
  rotated  `phase` on the rotated stream (10 tasks, task 1): the task's sampling grid and each batch's bilinear rotation
  rot_mix  `mixed` on the rotated stream

Rows alternate between the two checkouts, each in a fresh process (PYTHONPATH picks the code):

    CLTRAIN_DATA=../shared/data python scripts/bench_data_path.py --base /tmp/base [--rounds 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = ("phase", "eval", "mixed", "rotated", "rot_mix")


def worker(threads: int, repeats: int) -> None:
    """Measure both paths with whatever cltrain PYTHONPATH gives; print one JSON line."""
    import torch

    torch.set_num_threads(threads)
    from cltrain.config import load_config
    from cltrain.streams.base import STREAMS
    from cltrain.streams.loader import eval_batches

    def stream_of(name: str):
        cfg = load_config("bench/pmnist_naive", [f"stream.name={name}", "stream.n_tasks=10"])
        return STREAMS.get(name)(cfg).to(torch.device("cpu"))

    stream, rotated = stream_of("permuted"), stream_of("rotated")
    idx = stream.tasks[1].train_idx
    tids = torch.full_like(idx, 1)
    order = torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(0))
    batches = [idx[order[i:i + 128]] for i in range(0, idx.numel(), 128)]
    mixed_ids = torch.randint(0, 10, (idx.numel(),), generator=torch.Generator().manual_seed(1))

    def phase(s=stream) -> None:
        for rows in batches:
            s.train_batch(rows, tids[:rows.numel()], 1)

    def mixed(s=stream) -> None:
        for k, rows in enumerate(batches):
            s.train_batch(rows, mixed_ids[k * 128:k * 128 + rows.numel()])

    def evaluate() -> None:
        for task in stream.tasks:
            for _ in eval_batches(stream, task.id, 2000):
                pass

    paths = {"phase": phase, "eval": evaluate, "mixed": mixed, "rotated": lambda: phase(rotated),
             "rot_mix": lambda: mixed(rotated)}
    out = {}
    for name, fn in paths.items():
        times = []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
        out[name] = [1e3 * min(t[0] for t in times), 1e3 * min(t[1] for t in times)]
    print("RESULT " + json.dumps(out), flush=True)


def measure(code: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(args.threads),
           "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="the other checkout (e.g. `git archive REV` extracted)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timings per path and process (the best is kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads, args.repeats)
        return
    if args.base is None or not (args.base / "cltrain").is_dir():
        parser.error(f"--base {args.base}: give a checkout of cltrain (a folder holding cltrain/)")
    rows = {"this checkout": REPO, "base": args.base.resolve()}
    results: dict[str, list[dict]] = {name: [] for name in rows}
    for r in range(args.rounds):
        order = list(rows) if r % 2 == 0 else list(rows)[::-1]  # alternate which runs first
        for name in order:
            results[name].append(measure(rows[name], args))
            res = results[name][-1]
            print(f"round {r + 1} {name:14s} " + "  ".join(f"{p} {res[p][0]:7.1f} ms (CPU {res[p][1]:7.1f})"
                                                         for p in PATHS), flush=True)
    print(f"\n{args.threads} thread(s), {args.rounds} round(s), best of {args.repeats} per process; "
          "median [min-max] over the rounds, ms")
    print(f"{'row':14s} " + " ".join(f"{f'{p} {kind}':>22s}" for p in PATHS for kind in ("wall", "CPU")))
    for name, res in results.items():
        cells = []
        for path in PATHS:
            for k in (0, 1):
                vals = [x[path][k] for x in res]
                cells.append(f"{statistics.median(vals):7.1f} [{min(vals):6.1f}-{max(vals):6.1f}]")
        print(f"{name:14s} " + " ".join(f"{c:>22s}" for c in cells))
    for path in PATHS:
        ratios = [h[path][1] / b[path][1] for h, b in zip(results["this checkout"], results["base"])]
        print(f"{path} CPU, this checkout / base, per round: {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}-{max(ratios):.3f}]")


if __name__ == "__main__":
    main()
