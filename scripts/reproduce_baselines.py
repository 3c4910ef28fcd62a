"""Baselines on van de Ven & Tolias (2019)'s split-MNIST protocol, tuned on validation data; writes
docs/results/baselines.md (measured numbers only).

    CLTRAIN_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python scripts/reproduce_baselines.py \
        [--runs runs/baselines] [--steps 100] [--seeds 0 1 2] [--scenarios task_incremental ...] [--doc-only]

Every grid point x seed is one `cltrain fit` of experiments/baselines/split_mnist.yaml (in this process, through
the CLI's own entry point); a run whose metrics.json exists is skipped, so an interrupted reproduction continues
where it stopped. Each method's regularisation strength is then picked by mean validation ACC over the seeds
(`cltrain report --select val --tune ...`, cltrain/selection.py) and the table shows the pick's *test* ACC.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCENARIOS = ("task_incremental", "domain_incremental", "class_incremental")
TUNED = ("learner.lam", "learner.c")
# method -> the grid of its overrides (one list per grid point); kept small: 2 shared CPU cores
METHODS: dict[str, list[list[str]]] = {
    "fine-tuning": [["learner.name=finetune"]],
    "joint": [["learner.name=joint"]],
    "experience replay (2000)": [["learner.name=finetune", "plugins.replay.capacity=2000"]],
    "EWC": [["learner.name=ewc", "learner.mode=offline", f"learner.lam={lam}"] for lam in ("1e3", "1e6", "1e9")],
    "online EWC": [["learner.name=ewc", "learner.mode=online", f"learner.lam={lam}"] for lam in ("1e3", "1e6", "1e9")],
    "SI": [["learner.name=si", f"learner.c={c}"] for c in ("1.0", "100.0", "10000.0")],
}


def point_name(method: str, overrides: list[str], seed: int) -> str:
    tuned = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] in TUNED]
    slug = method.split(" (")[0].replace(" ", "_").replace("-", "").lower()
    return "_".join([slug, *tuned, f"s{seed}"])


def run_grid(runs: Path, scenario: str, steps: int, seeds: list[int]) -> None:
    from cltrain.cli import main

    for method, grid in METHODS.items():
        for overrides in grid:
            for seed in seeds:
                run_dir = runs / scenario / point_name(method, overrides, seed)
                if (run_dir / "metrics.json").exists():
                    continue
                start = time.perf_counter()
                code = main(["fit", "baselines/split_mnist", f"stream.scenario={scenario}",
                             f"trainer.steps_per_task={steps}", f"seed={seed}", f"run_dir={run_dir}", *overrides])
                print(f"[baselines] {scenario} {run_dir.name}: exit {code}, {time.perf_counter() - start:.0f} s",
                      flush=True)
                if code != 0:
                    raise SystemExit(f"run {run_dir} failed (exit {code})")


def method_of(label_key: dict[str, str]) -> str:
    name, mode = label_key.get("learner.name"), label_key.get("learner.mode")
    if name == "ewc":
        return "online EWC" if mode == "online" else "EWC"
    if name == "finetune" and "plugins.replay.capacity" in label_key:
        return "experience replay (2000)"
    return {"finetune": "fine-tuning", "joint": "joint", "si": "SI"}.get(name, str(name))


def scenario_rows(runs: Path, scenario: str) -> list[list[str]]:
    from cltrain.report import _fmt, find_runs, group_runs, mean_sd
    from cltrain.selection import select

    picks = select(group_runs(find_runs([runs / scenario])), list(TUNED))
    rows = []
    for pick in picks:
        chosen = pick.chosen
        acc = [m["acc"] * 100 for m in chosen.metrics]
        val = [m["val_acc"] * 100 for m in chosen.metrics]
        rows.append([method_of(dict(pick.method.key)), _fmt(mean_sd(acc)), str(len(acc)), _fmt(mean_sd(val)),
                     (pick.chosen_setting() + _edge(pick)) if pick.grid else "—", pick.grid_text(),
                     ", ".join(f"{_key_value(g)}: {v * 100:.1f}" for g, v in pick.candidates) if pick.grid else "—"])
    order = list(METHODS)
    return sorted(rows, key=lambda r: order.index(r[0]) if r[0] in order else len(order))


def _edge(pick) -> str:
    """Flag a pick at the end of its grid: a wider grid might pick further out."""
    from cltrain.selection import _numeric_first

    chosen = dict(pick.chosen.key)
    at_edge = any(len(v) > 1 and chosen[k] in (min(v, key=_numeric_first), max(v, key=_numeric_first))
                  for k, v in pick.grid.items())
    return " (grid edge)" if at_edge else ""


def divergence_line(folder: Path) -> str:
    """A diverged run is at chance even on the task it has just trained: report the worst such accuracy."""
    finals = []
    for metrics_path in folder.glob("*/metrics.json"):
        rows = json.loads(metrics_path.read_text())["acc_matrix"]
        finals.append((rows[-1][-1] * 100, metrics_path.parent.name))
    worst, name = min(finals)
    return (f"\nDivergence check: the lowest accuracy on the just-trained last task over all {len(finals)} runs of "
            f"this scenario (every grid point, every seed) is {worst:.1f} % (`{name}`); chance is 50 % (Task-IL, "
            "Domain-IL) or 10 % (Class-IL).\n")


def _key_value(group) -> str:
    key = dict(group.key)
    return ", ".join(f"{k.split('.')[-1]}={key[k]}" for k in TUNED if k in key)


def write_doc(runs: Path, steps: int, seeds: list[int], out: Path) -> None:
    shown = runs.relative_to(REPO) if runs.is_relative_to(REPO) else runs
    lines = [DOC_HEAD.format(steps=steps, seeds=", ".join(map(str, seeds)), n=len(seeds), runs=shown)]
    for scenario in SCENARIOS:
        if not (runs / scenario).is_dir():
            lines.append(f"\n### Split MNIST, {scenario}\n\nNot run in this reproduction.\n")
            continue
        lines.append(f"\n### Split MNIST, {scenario}\n\n| method | test ACC (%) | seeds | val ACC (%) | picked by "
                     "val | grid searched | mean val ACC of each grid point (%) |\n|---|---|---|---|---|---|---|")
        lines += ["| " + " | ".join(row) + " |" for row in scenario_rows(runs, scenario)]
        lines.append(divergence_line(runs / scenario))
    lines.append(DOC_TAIL)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


DOC_HEAD = """# Baselines on the standard protocol (van de Ven & Tolias 2019), tuned on validation data

Regenerate: `CLTRAIN_DATA=<data> OMP_NUM_THREADS=1 python scripts/reproduce_baselines.py --steps {steps}`
(runs under `{runs}/<scenario>/`; finished runs are reused). Every figure in the tables is measured by that
command; the EWC-under-SGD figures at the end by the commands given there.

**Protocol** (experiments/baselines/split_mnist.yaml): split MNIST, 5 tasks of two digits, MLP 784-400-400,
Adam lr 1e-3, batch 128, as in van de Ven & Tolias (2019) — the paper's other settings (2000 iterations per
task, 5000 for permuted MNIST with a 784-1000-1000 MLP, Adam lr 1e-4, experiments/baselines/pmnist.yaml) are
in the YAML files. Scenarios: task-incremental (the task id restricts the prediction to the task's two
classes), domain-incremental (one 2-way head: first or second digit of the pair), class-incremental (one
10-way head, no task id).

**Cuts at this machine's scale (2 CPU cores shared by four engineers)** — each changes the numbers:
- **{steps} iterations per task instead of 2000** (one run of the full 2000 took 207 s here under load, and the grid
  needs 108 runs); fewer iterations mean less learning *and* less forgetting per task, so fine-tuning's
  forgetting and the regularisers' benefit are not the paper's.
- **{n} seeds ({seeds})**, mean ± sd (sample sd) over them.
- **a 3-point grid per regularised method** (EWC and online EWC λ ∈ {{1e3, 1e6, 1e9}}, SI c ∈ {{1, 100, 1e4}});
  the pick is the grid point with the best mean *validation* ACC over the seeds (`cltrain report --select val --tune
  learner.lam,learner.c`), never test ACC. A wider grid is one line in `METHODS` of the script.
- **10 % of each task's training images are held out** for validation (`stream.val_fraction=0.1`); the paper
  trains on all of them.
- experience replay: cltrain's reservoir buffer of 2000 samples, replayed alongside each batch (not the paper's
  method list of 2019, which has no exact-replay row in every version).
- **permuted MNIST is not run** in this reproduction (experiments/baselines/pmnist.yaml is ready; at 5000 iterations
  per task and a 2×1000 MLP one run is over an hour on these cores).

**The paper's table is not reproduced beside ours**: its numbers could not be retrieved from the sources
available on this machine, and no number is written here that was not read or measured. Fill the column from
the paper's split-MNIST table when comparing; the comparison is only meaningful after removing the cuts above.
"""

DOC_TAIL = """
Columns: *test ACC* — mean test accuracy over the 5 tasks after the last task, of the picked grid point;
*val ACC* — the same on the held-out validation images (what the pick maximised); *picked by val* — the
chosen setting; *mean val ACC of each grid point* — what the choice saw.

## Why EWC went to chance with SGD (docs/results/tame.md: `pmnist10_ewc`, `pmnist20_ewc`)

Offline EWC adds 0.5·λ·Σ_tasks F_t·(θ − θ_t)² to the loss: along the stiffest weight its curvature is
λ·ΣF_max, and it grows with every finished task because the Fishers are summed. Gradient descent with heavy-ball
momentum β on a quadratic of curvature h is stable only while lr·h < 2(1 + β) (= 3.8 at β = 0.9); past it the
weight oscillates with growing amplitude, the loss explodes and every task falls to chance.
Measured from the Fishers stored in the checkpoints (seed 0, 20,000 training images per task; `cltrain fit
tame/pmnist_ewc stream.n_tasks=3 stream.train_per_task=20000 stream.test_per_task=1000` and `cltrain fit
bench/pmnist_ewc stream.n_tasks=10 stream.train_per_task=20000 stream.test_per_task=1000`, then
lr·λ·max over weights of the running sum of `learner._extra_state["fishers"]` in `checkpoints/last.pt`):

| configuration | lr · λ · ΣF_max after task 1, 2, 3, ... | outcome |
|---|---|---|
| tame/pmnist_ewc (LeNet-5, SGD lr 0.02, momentum 0.9, λ = 100), 3 tasks | 1.06, 1.94, 2.99 (`classifier.5.weight`) | not yet diverged (ACC 60.5 %) |
| bench/pmnist_ewc (MLP 512-512, SGD lr 0.01, momentum 0.9, λ = 100), 10 tasks | 0.15, 0.27, 0.34, 0.43, 0.52, 0.60, 0.64, 0.70, 0.80, 0.88 | no divergence (ACC 82.0 %) |

With LeNet the product grows by about 1 per task, so (extrapolating) the 4th task's sum passes the 3.8 bound —
consistent with the 5-task run staying above chance and the 10- and 20-task runs collapsing to chance with
identical per-task numbers. The cause is the summed penalty's stiffness against SGD's step size, not EWC's
Fisher: fixes that keep lr·λ·ΣF_max < 2(1 + β) are a smaller λ·lr, online EWC (γ < 1 bounds the sum), or Adam,
whose per-weight step is bounded by lr whatever the curvature (the protocol above uses Adam; see each
scenario's divergence check, which covers λ up to 1e9). tame/pmnist_ewc now ships λ = 10, picked on validation over a grid capped below this bound and checked on 10 and 20 tasks (docs/results/tame.md, "Baselines for the comparison").
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/baselines")
    parser.add_argument("--steps", type=int, default=100, help="iterations per task (the paper: 2000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--doc-only", action="store_true", help="only rewrite the doc from finished runs")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "baselines.md"))
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    runs = Path(args.runs).resolve()
    if not args.doc_only:
        import torch

        torch.set_num_threads(1)  # 2 shared cores: more threads than cores spin against each other
        for scenario in args.scenarios:
            run_grid(runs, scenario, args.steps, args.seeds)
    write_doc(runs, args.steps, args.seeds, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
