"""Reproduce the merging study and regenerate docs/results/merging.md.

    python scripts/reproduce_merging.py                 # 3 seeds, CPU scale (minutes)
    python scripts/reproduce_merging.py --seeds 0       # one seed
    python scripts/reproduce_merging.py --report-only

1. A base MLP is pre-trained on Fashion-MNIST (all 10 classes, outside the stream; one per seed).
2. On 5-task split MNIST (experiments/merging/split_mnist_merge.yaml) the merge learner fine-tunes that base on each
   task (one run per seed, TIES at every boundary); `cltrain merge`'s code then merges its five experts with
   every method (lam, where a method has one, chosen on 500 training samples per task).
3. The same learner from the seeded random initialisation instead of the base (the baselines' start).
4. Fine-tuning, EWC and joint training on the same stream from the seeded random initialisation.
Runs land in runs/merging/<condition>/seed<k>; finished runs are reused.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cltrain import strict_json  # noqa: E402
from cltrain.cli import _quiet_lightning  # noqa: E402
from cltrain.config import component_config, load_config  # noqa: E402
from cltrain.experiment import run_experiment  # noqa: E402
from cltrain.merging import MERGERS  # noqa: E402
from cltrain.merging.offline import merge_run  # noqa: E402

ROOT = REPO / "runs" / "merging"
DOC = REPO / "docs" / "results" / "merging.md"
QUIET = ["trainer.progress_bar=false", "logger.wandb.mode=disabled"]
PRETRAIN = ["stream.name=split", "stream.dataset=fashion_mnist", "stream.n_tasks=1", "stream.train_per_task=20000",
            "stream.test_per_task=2000", "learner.name=finetune", "trainer.epochs_per_task=2"]
METHODS = {  # method -> its options (papers' defaults where they give one)
    "average": {}, "task_arithmetic": {}, "ties": {"density": 0.2}, "dare": {"density": 0.1},
    "breadcrumbs": {"drop_low": 0.85, "drop_high": 0.01}, "pcb": {"density": 0.2},
    "adamerging": {"granularity": "layer", "coef_steps": 200, "coef_lr": 0.01},
}
BASELINES = {"finetune": ["learner.name=finetune"], "ewc": ["learner.name=ewc", "learner.lam=1000"],
             "joint": ["learner.name=joint"]}


def fit(name: str, seed: int, overrides: list[str], experiment: str = "merging/split_mnist") -> Path:
    run = ROOT / name / f"seed{seed}"
    if not (run / "metrics.json").exists():
        resume = ["resume=true"] if (run / "checkpoints" / "last.pt").exists() else []
        run_experiment(load_config(experiment, [*overrides, *QUIET, f"seed={seed}", f"run_dir={run}", *resume]))
    return run


def pretrained_base(seed: int) -> Path:
    run = fit("base_fmnist", seed, PRETRAIN)
    path = run / "base.pt"
    if not path.exists():
        learner = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["learner"]
        torch.save({k[len("model."):]: v for k, v in learner.items() if k.startswith("model.")}, path)
    return path


def merge_all(run: Path) -> dict[str, dict]:
    out = {}
    for method, options in METHODS.items():
        target = run / "merged" / method / "merge.json"
        if not target.exists():
            schema = MERGERS.get(method).Config
            req = SimpleNamespace(method=method, lam=None, lam_grid=[0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                                  val_per_task=500, out=None)
            merge_run(run, req, component_config(options, schema, "merge") if schema else None)
        out[method] = json.loads(target.read_text())
    return out


def run_all(seeds: list[int]) -> None:
    _quiet_lightning()
    torch.set_num_threads(1)
    for seed in seeds:
        base = pretrained_base(seed)
        merge_all(fit("merge_fmnist_base", seed, [f"learner.base={base}"], "merging/split_mnist_merge"))
        merge_all(fit("merge_random_base", seed, [], "merging/split_mnist_merge"))
        for name, overrides in BASELINES.items():
            fit(name, seed, overrides)
        for name, (experiment, overrides) in orders(base).items():
            fit(name, seed, overrides, experiment)


REVERSED = "stream.order=[4,3,2,1,0]"


def orders(base: Path | None) -> dict[str, tuple[str, list[str]]]:
    """Order sensitivity: the merge learner (F-MNIST base) and fine-tuning with the tasks met in reverse."""
    base_key = [f"learner.base={base}"] if base is not None else []
    return {"merge_fmnist_base_reversed": ("merging/split_mnist_merge", [REVERSED, *base_key]),
            "finetune_reversed": ("merging/split_mnist", [REVERSED])}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def report(seeds: list[int]) -> str:
    lines = []
    for base in ("merge_fmnist_base", "merge_random_base"):
        runs = [ROOT / base / f"seed{s}" for s in seeds if (ROOT / base / f"seed{s}" / "merged").exists()]
        merged = [{m: json.loads((r / "merged" / m / "merge.json").read_text()) for m in METHODS} for r in runs]
        learner = [json.loads((r / "metrics.json").read_text()) for r in runs]
        title = "Fashion-MNIST-pre-trained base" if base == "merge_fmnist_base" else "random-init base (seeded)"
        lines += [f"### Experts fine-tuned from the {title} ({len(runs)} seeds)", "",
                  "| method | ACC (merged, mean over tasks) | normalised by the experts | lam | time per merge (s) |",
                  "|---|---|---|---|---|"]
        if merged:
            experts = [statistics.mean(m["average"]["expert_acc"]) for m in merged]
            lines.append(f"| individual experts (each on its own task) | {mean_sd(experts)} | 1 | — | — |")
        for method in METHODS:
            rows = [m[method] for m in merged]
            lams = sorted({r["lam"] for r in rows})
            lines.append(f"| {method} | {mean_sd([r['acc'] for r in rows])} | "
                         f"{mean_sd([r['normalised_acc'] for r in rows])} | {', '.join(map(str, lams))} | "
                         f"{mean_sd([r['merge_time_s'] for r in rows])} |")
        lines.append(f"| merge learner along the stream (ties at each boundary): final ACC | "
                     f"{mean_sd([m['acc'] for m in learner])} | — | — | — |")
        lines.append(f"| same, BWT | {mean_sd([m['bwt'] for m in learner])} | — | — | — |")
        if merged:
            lines.append(f"\nTask vectors kept for 5 tasks: {merged[0]['average']['task_vector_bytes'] / 2**20:.2f} "
                         f"MiB (grows with the tasks; running_average keeps one vector).")
        lines.append("")
    lines += ["### Continual-learning baselines (seeded random initialisation, same stream)", "",
              "| method | ACC | BWT | forgetting |", "|---|---|---|---|"]
    for name in BASELINES:
        ms = [json.loads((ROOT / name / f"seed{s}" / "metrics.json").read_text()) for s in seeds
              if (ROOT / name / f"seed{s}" / "metrics.json").exists()]
        lines.append(f"| {name} | {mean_sd([m['acc'] for m in ms])} | {mean_sd([m['bwt'] for m in ms])} | "
                     f"{mean_sd([m['forgetting'] for m in ms])} |")
    lines += ["", "### Task order: natural (0..4) vs reversed (4..0), final ACC", "",
              "| method | natural | reversed |", "|---|---|---|"]
    for name, natural in (("merge_fmnist_base_reversed", "merge_fmnist_base"), ("finetune_reversed", "finetune")):
        cols = []
        for run_name in (natural, name):
            cols.append(mean_sd([json.loads((ROOT / run_name / f"seed{s}" / "metrics.json").read_text())["acc"]
                                 for s in seeds if (ROOT / run_name / f"seed{s}" / "metrics.json").exists()]))
        lines.append(f"| {natural} | {cols[0]} | {cols[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        run_all(args.seeds)
    tables = report(args.seeds)
    template = (REPO / "docs" / "results" / "merging_notes.md").read_text()
    DOC.write_text(template.replace("{{TABLES}}", tables))
    print(tables)


if __name__ == "__main__":
    main()
