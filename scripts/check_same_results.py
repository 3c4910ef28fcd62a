"""Check that two checkouts of cltrain give identical metrics.json (timing fields aside) for a fixed seed on CPU.

A figure that only the head records (a new method figure) is named beside the verdict, not counted as a change;
one the head no longer records is a difference.

Runs each experiment below with `python -m cltrain.cli fit` once per checkout (PYTHONPATH=<checkout>), then
compares the metrics.json files key by key, exactly (no tolerance). Used for the speed work (issue 13): main's
code against the branch's.

    CLTRAIN_DATA=../shared/data python scripts/check_same_results.py --base /work/main --head . [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SMALL = ["stream.train_per_task=2000", "stream.test_per_task=500", "trainer.progress_bar=false",
         "logger.wandb.mode=disabled", "seed=3"]
# name -> (experiment, overrides): each exercises another path of the loader, transforms or evaluation
CASES = {
    "permuted": ("bench/pmnist_naive", ["stream.n_tasks=3", "trainer.epochs_per_task=2"]),
    "permuted_one_pass_hidden32": ("bench/pmnist_naive", ["stream.n_tasks=3", "model.hidden=[32]"]),
    "permuted_steps": ("bench/pmnist_naive", ["stream.n_tasks=3", "trainer.steps_per_task=7"]),
    "powerlaw_val": ("bench/pmnist_naive", ["stream.n_tasks=4", "stream.schedule=powerlaw", "stream.val_fraction=0.1"]),
    "rotated_agnostic": ("bench/pmnist_naive", ["stream.name=rotated", "stream.n_tasks=3",
                                                "stream.presentation=task_agnostic"]),
    "rotated_powerlaw": ("bench/pmnist_naive", ["stream.name=rotated", "stream.n_tasks=3", "stream.schedule=powerlaw"]),
    "split_replay": ("bench/split_mnist_replay", ["stream.n_tasks=5", "stream.train_per_task=1000"]),
    "split_ewc": ("bench/split_mnist_ewc", ["stream.n_tasks=5", "stream.train_per_task=1000"]),
    "split_domain": ("baselines/split_mnist", ["stream.scenario=domain_incremental", "trainer.steps_per_task=30"]),
    # SI reads each step's gradients before the clip (optim.grad_clip_norm) and the update: the order of those three
    "split_si_clipped": ("bench/split_mnist_si", ["stream.n_tasks=5", "stream.train_per_task=1000",
                                                  "optim.grad_clip_norm=2.0"]),
    "permuted_bf16": ("bench/pmnist_naive", ["stream.n_tasks=2", "trainer.precision=bf16-mixed"]),  # autocast steps
    "ibcl_pairs": ("ibcl/mnist_pairs", ["stream.n_tasks=2"]),  # a Bayesian head's ELBO (its own step outputs)
    # TAME at the boundary study's small scale (docs/results/tame.md): detection, spawning, pruning, scoring
    "tame_split": ("tame/split_mnist", ["stream.n_tasks=2", "stream.train_per_task=2012", "trainer.epochs_per_task=6",
                                        "learner.window=30", "learner.selector_capacity=1000",
                                        "learner.prune_capacity=1000", "learner.selector_epochs=3",
                                        "learner.eval_selector_epochs=1", "learner.expert_prune_epochs=3"]),
}
TIMING = {"wall_time_s", "phase_wall_time_s", "finished_utc", "detection_plot"}


def run(checkout: Path, experiment: str, overrides: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-m", "cltrain.cli", "fit", experiment, *SMALL, *overrides,
                           f"run_dir={run_dir}"], cwd=checkout, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: {experiment} {overrides} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout of the reference code (e.g. main)")
    parser.add_argument("--head", type=Path, default=Path("."), help="checkout under test")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="same_results_"))
    differ = 0
    for name, (experiment, overrides) in CASES.items():
        if args.only and name not in args.only:
            continue
        base = run(args.base.resolve(), experiment, overrides, out / name / "base")
        head = run(args.head.resolve(), experiment, overrides, out / name / "head")
        # a figure only the head records (e.g. a new method figure) moves no result: named, not counted
        added = sorted(set(head) - set(base))
        diff = sorted(k for k in set(base) if base[k] != head.get(k))
        differ += bool(diff)
        verdict = "identical" if not diff else "DIFFER: " + ", ".join(diff)
        new = f"; new in head: {', '.join(added)}" if added else ""
        print(f"{name:28s} {verdict}{new}  (ACC {head['acc']:.4f})", flush=True)
    print(f"{differ} of the cases differ; run folders in {out}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
