"""Reproduce the merging study and regenerate docs/results/merging.md.

    python scripts/reproduce_merging.py                 # 3 seeds x 3 task orders, CPU scale
    python scripts/reproduce_merging.py --seeds 0       # one seed
    python scripts/reproduce_merging.py --report-only

1. A base MLP is pre-trained on Fashion-MNIST (all 10 classes, outside the stream; one per seed).
2. On 5-task split MNIST (experiments/merging/split_mnist_merge.yaml, 10 % of each task's training images held
   out as its validation split) the merge learner fine-tunes that base on each task (one run per seed, TIES at
   every boundary); `cltrain merge`'s code then merges its five experts with every method (lam, densities and
   AdaMerging's inputs from the validation split).
3. The same learner from the seeded random initialisation instead of the base (the baselines' start).
4. Fine-tuning, EWC and joint training on the same stream from the seeded random initialisation; fine-tuning
   keeps its per-phase weights, merged as task vectors too (`cltrain merge source=phases`).
5. Order sensitivity: the merge learner (F-MNIST base), fine-tuning and EWC with the tasks met in the natural
   order, reversed, and in a shuffle drawn from the seed (cltrain.seeding purpose "merging_task_order").
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

from cltrain.cli import _quiet_lightning  # noqa: E402
from cltrain.config import component_config, load_config  # noqa: E402
from cltrain.experiment import run_experiment  # noqa: E402
from cltrain.merging import MERGERS  # noqa: E402
from cltrain.merging.offline import merge_run  # noqa: E402
from cltrain.keep import refuse_partial_page  # noqa: E402
from cltrain.seeding import generator  # noqa: E402

ROOT = REPO / "runs" / "merging"
DOC = REPO / "docs" / "results" / "merging.md"
QUIET = ["trainer.progress_bar=false", "logger.wandb.mode=disabled"]
PRETRAIN = ["stream.name=split", "stream.dataset=fashion_mnist", "stream.n_tasks=1", "stream.train_per_task=20000",
            "stream.test_per_task=2000", "learner.name=finetune", "trainer.epochs_per_task=2"]
METHODS = {  # method -> its options (papers' defaults where they give one)
    "average": {}, "task_arithmetic": {}, "ties": {}, "dare": {},
    "breadcrumbs": {"drop_low": 0.85, "drop_high": 0.01}, "pcb": {},
    "adamerging": {"granularity": "layer", "coef_steps": 200, "coef_lr": 0.01},
}
DENSITIES = [0.1, 0.2, 0.3, 0.5]  # ties, dare, pcb: chosen with lam on the validation split
LAMS = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
PHASE_METHODS = ("average", "task_arithmetic", "ties")  # over fine-tuning's per-phase weights (source=phases)
BASELINES = {"finetune": ["learner.name=finetune", "trainer.keep_phase_weights=true"],
             "ewc": ["learner.name=ewc", "learner.lam=1000"], "joint": ["learner.name=joint"]}
ORDERED = ("merge_fmnist_base", "finetune", "ewc")  # the conditions run in every task order


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


def merge_all(run: Path, methods=tuple(METHODS), source: str = "merge") -> dict[str, dict]:
    out = {}
    for method in methods:
        target = run / ("merged" if source == "merge" else f"merged_{source}") / method / "merge.json"
        if not target.exists():
            schema = MERGERS.get(method).Config
            grid = DENSITIES if schema is not None and "density" in schema.__dataclass_fields__ else None
            req = SimpleNamespace(method=method, source=source, base=None, lam=None, lam_grid=LAMS,
                                  density_grid=grid, val_per_task=500, needs_val=True, out=target.parent)
            merge_run(run, req, component_config(METHODS[method], schema, "merge") if schema else None)
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
        merge_all(ROOT / "finetune" / f"seed{seed}", PHASE_METHODS, "phases")
        for name, (experiment, overrides) in ordered_runs(base, seed).items():
            fit(name, seed, overrides, experiment)


def task_orders(seed: int) -> dict[str, list[int]]:
    """natural, reversed, and a shuffle drawn from the seed (redrawn until it is neither of the other two)."""
    fixed = {"natural": [0, 1, 2, 3, 4], "reversed": [4, 3, 2, 1, 0]}
    draw = 0
    while (shuffled := torch.randperm(5, generator=generator(seed, "merging_task_order", draw)).tolist()) \
            in fixed.values():
        draw += 1
    return {**fixed, "shuffled": shuffled}


def condition(name: str, base: Path | None) -> tuple[str, list[str]]:
    if name == "merge_fmnist_base":
        return "merging/split_mnist_merge", [f"learner.base={base}"]
    return "merging/split_mnist", BASELINES[name]


def ordered_runs(base: Path | None, seed: int) -> dict[str, tuple[str, list[str]]]:
    """The ordered conditions in the reversed and the shuffled order (the natural order is the main runs)."""
    out = {}
    for name in ORDERED:
        experiment, overrides = condition(name, base)
        for label, order in task_orders(seed).items():
            if label != "natural":
                out[f"{name}_{label}"] = (experiment, [f"stream.order=[{','.join(map(str, order))}]", *overrides])
    return out


def mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def metrics(name: str, seeds: list[int]) -> list[dict]:
    return [json.loads((ROOT / name / f"seed{s}" / "metrics.json").read_text()) for s in seeds
            if (ROOT / name / f"seed{s}" / "metrics.json").exists()]


def merged(run_name: str, seeds: list[int], methods, folder: str = "merged") -> list[dict[str, dict]]:
    runs = [ROOT / run_name / f"seed{s}" for s in seeds if (ROOT / run_name / f"seed{s}" / folder).exists()]
    return [{m: json.loads((r / folder / m / "merge.json").read_text()) for m in methods} for r in runs]


def method_rows(results: list[dict[str, dict]], methods) -> list[str]:
    lines = []
    for method in methods:
        rows = [m[method] for m in results]
        lams = ", ".join(map(str, sorted({r["lam"] for r in rows})))
        densities = ", ".join(map(str, sorted({r["options"]["density"] for r in rows if "density" in r["options"]})))
        lines.append(f"| {method} | {mean_sd([r['acc'] for r in rows])} | "
                     f"{mean_sd([r['normalised_acc'] for r in rows])} | {lams} | {densities or '—'} | "
                     f"{mean_sd([r['merge_time_s'] for r in rows])} |")
    return lines


HEADER = ["| method | ACC (merged, mean over tasks) | normalised by the experts | lam | density | "
          "time per merge (s, measured under heavy load) |", "|---|---|---|---|---|---|"]


def expert_tables(seeds: list[int]) -> list[str]:
    lines = []
    for base in ("merge_fmnist_base", "merge_random_base"):
        results = merged(base, seeds, METHODS)
        learner = metrics(base, seeds)
        title = "Fashion-MNIST-pre-trained base" if base == "merge_fmnist_base" else "random-init base (seeded)"
        lines += [f"### Experts fine-tuned from the {title} ({len(results)} seeds)", "", *HEADER]
        if results:
            experts = [statistics.mean(e for e in m["average"]["expert_acc"] if e is not None) for m in results]
            lines.append(f"| individual experts (each on its own task) | {mean_sd(experts)} | 1 | — | — | — |")
        lines += method_rows(results, METHODS)
        lines.append(f"| merge learner along the stream (ties at each boundary): final ACC | "
                     f"{mean_sd([m['acc'] for m in learner])} | — | — | — | — |")
        lines.append(f"| same, BWT | {mean_sd([m['bwt'] for m in learner])} | — | — | — | — |")
        if results:
            lines.append(f"\nTask vectors kept for 5 tasks: {results[0]['average']['task_vector_bytes'] / 2**20:.2f} "
                         f"MiB (grows with the tasks; running_average keeps one vector).")
        lines.append("")
    return lines


def phase_table(seeds: list[int]) -> list[str]:
    results = merged("finetune", seeds, PHASE_METHODS, "merged_phases")
    lines = [f"### Fine-tuning's per-phase weights as task vectors (`cltrain merge source=phases`, {len(results)} "
             f"seeds)", "", "Vector k = the network after phase k minus the seeded initialisation; the 'experts' "
             "are fine-tuning's network after each task's phase.", "", *HEADER]
    return lines + method_rows(results, PHASE_METHODS) + [""]


def baseline_table(seeds: list[int]) -> list[str]:
    lines = ["### Continual-learning baselines (seeded random initialisation, same stream)", "",
             "| method | ACC | BWT | forgetting |", "|---|---|---|---|"]
    for name in BASELINES:
        ms = metrics(name, seeds)
        lines.append(f"| {name} | {mean_sd([m['acc'] for m in ms])} | {mean_sd([m['bwt'] for m in ms])} | "
                     f"{mean_sd([m['forgetting'] for m in ms])} |")
    return lines + [""]


def order_table(seeds: list[int]) -> list[str]:
    labels = ("natural", "reversed", "shuffled")
    shuffles = "; ".join(f"seed {s}: {task_orders(s)['shuffled']}" for s in seeds)
    lines = [f"### Task order: final ACC and BWT over {len(seeds)} seeds (mean ± sd)", "",
             f"Orders: natural [0, 1, 2, 3, 4], reversed [4, 3, 2, 1, 0], shuffled (drawn from the seed; {shuffles}).",
             "", "| method | " + " | ".join(f"{o} ACC" for o in labels) + " | spread of ACC over orders | "
             + " | ".join(f"{o} BWT" for o in labels) + " |", "|---" * 8 + "|"]
    for name in ORDERED:
        runs = {o: metrics(name if o == "natural" else f"{name}_{o}", seeds) for o in labels}
        accs = [statistics.mean(m["acc"] for m in runs[o]) for o in labels if runs[o]]
        spread = f"{max(accs) - min(accs):.3f}" if len(accs) == len(labels) else "—"
        acc = " | ".join(mean_sd([m["acc"] for m in runs[o]]) for o in labels)
        bwt = " | ".join(mean_sd([m["bwt"] for m in runs[o]]) for o in labels)
        lines.append(f"| {name} | {acc} | {spread} | {bwt} |")
    return lines


def page_runs(seeds: list[int]) -> list[str]:
    """The page's main runs: both merges and every baseline, every seed."""
    return [f"{name}/seed{s}" for s in seeds for name in ["merge_fmnist_base", "merge_random_base", *BASELINES]]


def missing_runs(root: Path, seeds: list[int]) -> list[str]:
    """The page's main runs not finished under root."""
    return [run for run in page_runs(seeds) if not (root / run / "metrics.json").exists()]


def report(seeds: list[int]) -> str:
    return "\n".join(expert_tables(seeds) + phase_table(seeds) + baseline_table(seeds) + order_table(seeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        run_all(args.seeds)
    refuse_partial_page(parser, missing_runs(ROOT, args.seeds), len(page_runs(args.seeds)), ROOT, DOC, keeps=False)
    tables = report(args.seeds)
    template = (REPO / "docs" / "results" / "merging_notes.md").read_text()
    DOC.write_text(template.replace("{{TABLES}}", tables))
    print(tables)


if __name__ == "__main__":
    main()
