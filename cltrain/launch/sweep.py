"""`cltrain sweep`: a grid of `cltrain fit` runs, one run folder each, launched here or as a SLURM job array.

Sweep folder layout (`run_dir`, default runs/sweeps/<experiment>/<timestamp>):
    sweep.json          experiment, points (name, overrides, run folder), launcher, SLURM job id
    points.tsv          one line per array task: run folder <TAB> overrides (read by the job script)
    job.sh              the sbatch script (slurm launcher)
    logs/               SLURM output of each array task
    <point name>/       the run folder of each point (config.yaml, metrics.json, checkpoints/, ...)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cltrain import strict_json
from cltrain.config import ExperimentConfig, load_config
from cltrain.errors import ConfigError
from cltrain.launch.grid import Point, expand
from cltrain.launch.launchers import LAUNCHERS, point_state
from cltrain.report import read_record
from cltrain.resolve import check_config


def plan(experiment: str, overrides: list[str]) -> tuple[Path, list[Point], ExperimentConfig]:
    """Expand the grid and validate every point's config before anything is written or submitted."""
    rest = [o for o in overrides if not o.startswith("run_dir=")]
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")]
    points = expand(rest)
    configs = [load_config(experiment, p.overrides) for p in points]
    for cfg in configs:
        check_config(cfg)  # components and combinations too, before anything is submitted
    root = Path(given[0] if given else Path("runs") / "sweeps" / configs[0].name /
                time.strftime("%Y%m%d-%H%M%S")).resolve()
    return root, points, configs[0]


def write_sweep(root: Path, experiment: str, points: list[Point], launcher: str) -> dict[str, Any]:
    if (root / "sweep.json").exists():
        raise ConfigError(f"{root} already holds a sweep; see `cltrain sweep --status {root}` or choose another run_dir")
    (root / "logs").mkdir(parents=True, exist_ok=True)
    meta = {
        "experiment": experiment,
        "launcher": launcher,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.executable,
        "points": [{"name": p.name, "overrides": p.overrides, "run_dir": str(root / p.name)} for p in points],
    }
    (root / "sweep.json").write_text(strict_json.dumps(meta, indent=2))
    return meta


def status(root: Path) -> int:
    meta_path = root / "sweep.json"
    if not meta_path.exists():
        raise ConfigError(f"{root} is not a sweep folder (no sweep.json)")
    meta = read_record(meta_path)
    states = point_state(root, meta)
    counts: dict[str, int] = {}
    for point, state in zip(meta["points"], states):
        counts[state] = counts.get(state, 0) + 1
        print(f"{state:9s} {point['name']}")
    print("; ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"  (of {len(states)})")
    if counts.get("done"):
        print(f"aggregate the finished ones: cltrain report {root}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.status:
        return status(Path(args.status))
    if not args.experiment:
        raise ConfigError("cltrain sweep needs an EXPERIMENT (or --status DIR)")
    root, points, cfg = plan(args.experiment, args.overrides)
    launcher = LAUNCHERS.get(args.launcher)(root, args.experiment, points, cfg)
    if args.dry_run:
        print(launcher.describe())
        return 0
    launcher.check()
    meta = write_sweep(root, args.experiment, points, args.launcher)
    print(f"sweep of {len(points)} points in {root}")
    return launcher.launch(meta)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sweep", help="run a grid of experiments (job array on SLURM, or here)",
                            description="e.g. cltrain sweep powerlaw/pmnist stream.schedule=powerlaw,none seed=0,1,2")
    parser.add_argument("experiment", nargs="?", help="experiment name or YAML path")
    parser.add_argument("overrides", nargs="*", help="key=v1,v2,... (a grid axis) or key=value; run_dir=SWEEP_DIR")
    parser.add_argument("--launcher", default="local", help="slurm (a job array) or local (one after another)")
    parser.add_argument("--dry-run", action="store_true", help="print the points and the sbatch script, run nothing")
    parser.add_argument("--status", metavar="DIR", help="which points of a sweep are done, running, failed")
    parser.set_defaults(func=cmd_sweep)
