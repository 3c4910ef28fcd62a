"""Benchmark: one permuted-MNIST phase's input transforms, per batch or materialised, in process CPU seconds.

Decides cltrain.streams.loader.MIN_PASSES (from how many passes over a phase transforming it once pays on
this device). Rows, each for one 60,000-row task in batches of 128, best of --repeats:

  per batch (main)       the per-row-index gather + normalise that cltrain used before (transform(x, task_ids))
  per batch (one task)   the single-task path (transform.for_task: one index_select of pixel columns)
  materialise            the whole phase transformed once in chunks (cltrain.streams.loader.materialise)
  slice a pass           one pass of row slices from the materialised phase
  loop: permute floats   the fastest hand-written loop's once-per-phase float permutation, then one pass

    python scripts/bench_transforms.py [--threads 1] [--repeats 5] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from cltrain.config import load_config
    from cltrain.streams.base import STREAMS
    from cltrain.streams.loader import materialise

    stream = STREAMS.get("permuted")(load_config("bench/pmnist_naive", ["stream.n_tasks=2"])).to(torch.device(args.device))
    idx = stream.tasks[1].train_idx
    tids = torch.full_like(idx, 1)
    order = torch.randperm(idx.numel(), device=idx.device)
    batches = [order[i:i + 128] for i in range(0, idx.numel(), 128)]
    floats = stream.transform.normalise(stream.train.images).view(idx.numel(), -1)
    perm = stream.transform.perms[1]
    whole = materialise(stream, idx, tids, 1, 1 << 40)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    cases = {
        "per batch (main)": lambda: [stream.transform(stream.train.images[idx[r]], tids[r]) for r in batches],
        "per batch (one task)": lambda: [stream.transform.for_task(stream.train.images[idx[r]], 1) for r in batches],
        "materialise": lambda: materialise(stream, idx, tids, 1, 1 << 40),
        "slice a pass": lambda: [(whole[0][r], whole[1][r]) for r in batches],
        "loop: permute floats": lambda: [p[r] for p in [floats[:, perm]] for r in batches],
    }
    best = {name: float("inf") for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():  # alternating, so a slow moment hits every case alike
            sync()
            start = time.process_time() if args.device == "cpu" else time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], (time.process_time() if args.device == "cpu" else time.perf_counter()) - start)
    unit = "CPU s" if args.device == "cpu" else "s"
    ref = best["per batch (one task)"]
    for name, seconds in best.items():
        print(f"{name:24s} {seconds:8.4f} {unit}  ({seconds / ref:.2f} per-batch passes)")


if __name__ == "__main__":
    main()
