"""Reproduce the power-law rehearsal study and regenerate docs/results/powerlaw.md.

    python scripts/reproduce_powerlaw.py              # permuted MNIST comparison, CPU scale, 3 seeds
    python scripts/reproduce_powerlaw.py --shard 0/2 & python scripts/reproduce_powerlaw.py --shard 1/2   # 2 cores
    python scripts/reproduce_powerlaw.py --all        # + split MNIST (3 seeds) + robustness sweeps (1 seed)
    python scripts/reproduce_powerlaw.py --full       # the paper's protocol (GPU): 5 seeds, 5,000 iterations/task
    python scripts/reproduce_powerlaw.py --report-only

Runs land in runs/powerlaw/<section>/<condition>/seed<k>. A finished run is skipped and a killed one resumed,
so the script can be stopped and restarted at any time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cltrain.cli import _quiet_lightning  # noqa: E402
from cltrain.config import load_config  # noqa: E402
from cltrain.errors import CltrainError  # noqa: E402
from cltrain.keep import add_option as add_keep_option, from_option, keep_beside, refuse_partial_page  # noqa: E402
from cltrain.experiment import run_experiment  # noqa: E402

CONDITIONS = {  # the paper's comparison on permuted MNIST: environment x learner
    "none": ["stream.schedule=none"],
    "powerlaw": ["stream.schedule=powerlaw"],
    "uniform": ["stream.schedule=uniform"],  # budget matched on samples stored over the run
    "exponential": ["stream.schedule=exponential"],
    # matched on exposure: every phase rehearses (so presents) as many samples as the power law's
    "uniform_exposure": ["stream.schedule=uniform", "stream.rehearsal.match=exposure"],
    "exponential_exposure": ["stream.schedule=exponential", "stream.rehearsal.match=exposure"],
    "joint": ["stream.schedule=joint"],
    "ewc": ["stream.schedule=none", "learner.name=ewc", "learner.lam=100"],
    "si": ["stream.schedule=none", "learner.name=si", "learner.c=10"],
    "powerlaw_ewc": ["stream.schedule=powerlaw", "learner.name=ewc", "learner.lam=100"],
}
# run first (all seeds) so that a stopped regeneration still answers the matching question
MATCHING = ("none", "powerlaw", "uniform", "exponential", "uniform_exposure", "exponential_exposure")
# The regeneration's scale (not the experiment file's 400-unit layers): sized so that all runs fit in an
# afternoon on 2 cores shared with several other jobs; --full runs the paper's protocol instead.
CPU_SCALE = ["model.hidden=[100,100]"]
# every main run also trains a probe copy on each new task alone from the phase's starting weights
PROBE = ["plugins.probe.steps=50", "plugins.probe.eval_every=5", "plugins.probe.threshold=0.9"]
# the same comparison where the budget binds: the oldest task keeps 1% instead of 10% in the last phase
TIGHT = ["stream.rehearsal.p_min=0.01"]
# exposure matching only: the clean comparison, and what fitted the deadline on the loaded machine
TIGHT_CONDITIONS = ("powerlaw", "uniform_exposure", "exponential_exposure")
SPLIT_CONDITIONS = {k: CONDITIONS[k] for k in (*MATCHING, "joint")}  # both matchings, as on permuted MNIST
SWEEPS = {  # robustness: one factor at a time around the CPU default, power law vs its budget-matched rivals
    "tasks": [[f"stream.n_tasks={n}"] for n in (5, 20)],
    "width": [[f"model.hidden=[{w},{w}]"] for w in (100, 1000)],
    "p_min": [[f"stream.rehearsal.p_min={p}"] for p in (0.01, 0.02, 0.05)],
}
SWEEP_CONDITIONS = ("powerlaw", "uniform")


def run_one(experiment: str, overrides: list[str], run_dir: Path) -> float:
    """Run (or finish) one experiment; returns the wall time spent now."""
    if (run_dir / "metrics.json").exists():
        return 0.0
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    start = time.perf_counter()
    cfg = load_config(experiment, [*overrides, f"run_dir={run_dir}", f"resume={str(resume).lower()}",
                                   "trainer.progress_bar=false", "logger.wandb.mode=disabled"])
    run_experiment(cfg)
    return time.perf_counter() - start


def runs_root(args) -> Path:
    return Path(args.runs).resolve() if args.runs else REPO / "runs" / ("powerlaw_full" if args.full else "powerlaw")


def plan(args) -> list[tuple[str, str, list[str], Path]]:
    root = runs_root(args)
    pm = "powerlaw/pmnist_full" if args.full else "powerlaw/pmnist"
    jobs = []
    for names in (MATCHING, [n for n in CONDITIONS if n not in MATCHING]):
        for seed in range(args.seeds):
            for name in names:
                jobs.append(("main", pm, [*CONDITIONS[name], *([] if args.full else CPU_SCALE), *PROBE, f"seed={seed}"],
                             root / "main" / name / f"seed{seed}"))
    for seed in range(args.seeds) if not args.full else ():
        for name in TIGHT_CONDITIONS:
            jobs.append(("tight", pm, [*CONDITIONS[name], *CPU_SCALE, *TIGHT, *PROBE, f"seed={seed}"],
                         root / "tight" / name / f"seed{seed}"))
    for seed in range(args.seeds):
        for name, ov in SPLIT_CONDITIONS.items() if args.all else ():
            jobs.append(("split", "powerlaw/split_mnist", [*ov, f"seed={seed}"], root / "split" / name / f"seed{seed}"))
    if args.all and not args.full:
        for factor, settings in SWEEPS.items():
            for setting in settings:
                tag = setting[0].split("=", 1)[1].strip("[]").replace(",", "x")
                for name in SWEEP_CONDITIONS:
                    jobs.append(("sweep", pm, [*CONDITIONS[name], *setting, "seed=0"],
                                 root / "sweeps" / factor / f"{tag}" / name / "seed0"))
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the paper's protocol (GPU scale), 5 seeds")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--all", action="store_true", help="also split MNIST and the robustness sweeps")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--shard", default="0/1", help="i/n: run jobs i, i+n, ... (n processes in parallel); "
                        "the page is written by whichever shard is run last with --report-only or n=1")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "powerlaw.md"))
    parser.add_argument("--runs", default=None, help="where the runs go (default: runs/powerlaw, with --full "
                        "runs/powerlaw_full)")
    add_keep_option(parser, "docs/results/runs/powerlaw")
    args = parser.parse_args()
    args.seeds = args.seeds or (5 if args.full else 3)
    if Path(args.out).suffix != ".md" or not Path(args.out).resolve().parent.is_dir():  # before any run, not after
        parser.error(f"--out {args.out}: give a .md file in a folder that exists")
    if not os.environ.get("CLTRAIN_DATA"):
        print("set CLTRAIN_DATA to the folder holding MNIST/raw", file=sys.stderr)
        return 2
    _quiet_lightning()
    # one thread per run: on shared cores torch's extra OpenMP threads spin against the other jobs (seen on the
    # loaded 2-core machine: 50-180 s a phase with torch's default threads, 11-12 s with one; loads differed)
    torch.set_num_threads(1)
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    jobs = plan(args)
    root = runs_root(args)
    kept = from_option(parser, args.keep, root)
    if not args.report_only:
        for i, (section, experiment, overrides, run_dir) in enumerate(jobs, 1):
            if (i - 1) % n_shards != shard:
                continue
            print(f"[{i}/{len(jobs)}] {section}: {experiment} {' '.join(overrides)}", flush=True)
            try:
                run_one(experiment, overrides, run_dir)
                if kept is not None:
                    keep_beside(run_dir, root, kept)
            except CltrainError as exc:  # missing data, a bad override: one line, as `cltrain fit` would say it
                print(f"reproduce_powerlaw: error: {exc} (finished runs are kept; rerun to continue)", file=sys.stderr)
                return exc.exit_code
    from powerlaw_doc import write_doc  # noqa: E402  (scripts/ is on sys.path when run as a script)

    if n_shards == 1 or args.report_only:
        missing = [run_dir.relative_to(root) for *_, run_dir in jobs if not (run_dir / "metrics.json").exists()]
        refuse_partial_page(parser, missing, len(jobs), root, args.out)
        write_doc(Path(args.out), root, args)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
