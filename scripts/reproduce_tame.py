"""Run TAME and its baselines at CPU scale and write docs/results/tame.md (measured numbers only).

    CLTRAIN_DATA=/work/shared/data .venv/bin/python scripts/reproduce_tame.py [--runs runs/tame_repro] [--only NAME ...]

Each run is one `cltrain fit` in a subprocess (one intra-op thread: the box has 2 shared cores); a run whose
metrics.json exists is skipped, so an interrupted reproduction continues where it stopped. The wall time of each
run is measured around the subprocess and stored next to its metrics (wall_clock.json).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cltrain.errors import ConfigError  # noqa: E402
from cltrain.keep import add_option as add_keep_option, from_option, keep_beside, refuse_partial_page  # noqa: E402

COMMON = ["trainer.progress_bar=false", "logger.wandb.mode=disabled"]

SI_CI_GRID = (0.1, 0.3, 1, 10, 100)  # class-incremental SI's c, picked by validation ACC (seed 0)
SI_CI_C = 0.3  # that pick (the page checks it against the grid's runs)

# Fine-tuning's gradient caps tried on permuted MNIST, (tasks, cap), before the shipped one (1e6: never reached)
CAP_TRIED = [(10, "1e6"), (10, 10), (10, 5), (20, 5)]
CAP_RUNS = [f"pmnist{n}_finetune_cap{cap}" for n, cap in CAP_TRIED] + ["pmnist10_finetune", "pmnist20_finetune"]

# name -> (experiment, extra overrides)
RUNS: dict[str, tuple[str, list[str]]] = {
    "tame_split_mnist": ("tame/split_mnist", []),
    "tame_pmnist": ("tame/pmnist", []),
    "tame_recurring": ("tame/recurring", []),
    "split_mnist_finetune": ("tame/split_mnist_finetune", []),
    "split_mnist_ewc": ("tame/split_mnist_ewc", []),
    "split_mnist_si": ("tame/split_mnist_si", []),
    # validation's best lambda for split MNIST (the file ships the next grid point: see "Baseline tuning")
    "split_mnist_ewc_lam1000": ("tame/split_mnist_ewc", ["learner.lam=1000"]),
    "pmnist_finetune": ("tame/pmnist_finetune", []),
    "pmnist_ewc": ("tame/pmnist_ewc", []),
    "pmnist_si": ("tame/pmnist_si", []),
    # validation's best c for permuted MNIST, and the next grid point, on the 20-task stream: both collapsed there,
    # so the file ships the one after ("Baseline tuning")
    **{f"pmnist20_si_c{c}": ("tame/pmnist_si", ["stream.n_tasks=20", f"learner.c={c}"]) for c in (10, 3)},
    "tame_split_fashion": ("tame/split_mnist", ["stream.dataset=fashion_mnist"]),
    # the split baselines again, class-incremental: the protocol TAME itself is scored under (no task id)
    "split_mnist_finetune_ci": ("tame/split_mnist_finetune", ["stream.scenario=class_incremental"]),
    "split_mnist_ewc_ci": ("tame/split_mnist_ewc", ["stream.scenario=class_incremental"]),
    # SI's c from the task-incremental grid (100) made the class-incremental run collapse (every task learned
    # after the first ends at 0 %); its own validation grid (the _val runs below) picks c = SI_CI_C
    "split_mnist_si_ci": ("tame/split_mnist_si", ["stream.scenario=class_incremental", f"learner.c={SI_CI_C}"]),
    **{f"split_mnist_si_ci_val_c{c}": ("tame/split_mnist_si", ["stream.scenario=class_incremental",
                                                               "stream.val_fraction=0.1", f"learner.c={c}"])
       for c in SI_CI_GRID},
    # fine-tuning's gradient cap ("Fine-tuning's cap"): a cap no step reaches (the uncapped run, bit for bit, with
    # its gradient norms logged) and looser caps than the shipped one
    **{f"pmnist{n}_finetune_cap{cap}": ("tame/pmnist_finetune", [f"stream.n_tasks={n}", f"optim.grad_clip_norm={cap}"])
       for n, cap in CAP_TRIED},
    # longer permuted streams: 10 tasks, and the paper's 20 (still at CPU scale per task)
    **{name: (experiment, [f"stream.n_tasks={n}"]) for n in (10, 20) for name, experiment in (
        (f"tame_pmnist{n}", "tame/pmnist"), (f"pmnist{n}_finetune", "tame/pmnist_finetune"),
        (f"pmnist{n}_ewc", "tame/pmnist_ewc"), (f"pmnist{n}_si", "tame/pmnist_si"))},
    # the split-MNIST run again under DDP: 2 gloo processes on the CPU, same seed and global batch
    "tame_split_mnist_ddp": ("tame/split_mnist", ["trainer.strategy=ddp", "trainer.devices=2"]),
    # the two 5-task TAME runs at two more seeds: the spread the single-seed figures above carry
    **{f"{name}_s{seed}": (experiment, [f"seed={seed}"])
       for name, experiment in (("tame_split_mnist", "tame/split_mnist"), ("tame_pmnist", "tame/pmnist"))
       for seed in (1, 2)},
    # the largest part of the 20-task gap is pruning loss: the 5-task run with 5x the fine-tuning after pruning
    "tame_pmnist_prune50": ("tame/pmnist", ["learner.expert_prune_epochs=50"]),
}
# The baselines of the accuracy table, per method: permuted MNIST on 5, 10 and 20 tasks, split MNIST task- and
# class-incremental (the tuning runs beside them are evidence for the shipped values, not comparison entries)
COMPARISON = {method: (f"pmnist_{method}", f"pmnist10_{method}", f"pmnist20_{method}", f"split_mnist_{method}",
                       f"split_mnist_{method}_ci") for method in ("finetune", "ewc", "si")}
SEEDED = ("tame_split_mnist", "tame_pmnist")  # seed 0 is the run without a suffix

TAME_RUNS = [name for name in RUNS if name.startswith("tame_")]

# The paper's Table (accuracy %, parameters); baselines use 61.7K parameters on MNIST.
PAPER = {
    "pmnist": {"tame": (87.32, "55.53K"), "ewc": (54.81, "61.7K"), "si": (81.31, "61.7K")},
    "split_mnist": {"tame": (98.63, "37.02K"), "ewc": (98.18, "61.7K"), "si": (94.85, "61.7K")},
}


def command(name: str, run_dir: Path) -> list[str]:
    experiment, extra = RUNS[name]
    return [".venv/bin/cltrain", "fit", experiment, *extra, *COMMON, f"run_dir={run_dir}"]


def run_one(name: str, root: Path) -> None:
    run_dir = root / name
    if (run_dir / "metrics.json").exists():
        print(f"[reproduce] {name}: done already, skipped", flush=True)
        return
    cmd = command(name, run_dir)
    resume = ["resume=true"] if (run_dir / "checkpoints" / "last.pt").exists() else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    print(f"[reproduce] {name}: {' '.join(cmd + resume)}", flush=True)
    start = time.perf_counter()
    log = (root / f"{name}.log").open("w")
    proc = subprocess.run(cmd + resume, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"[reproduce] {name} failed (exit {proc.returncode}); see {root / (name + '.log')}")
    (run_dir / "wall_clock.json").write_text(json.dumps({"seconds": seconds, "command": " ".join(cmd)}))
    print(f"[reproduce] {name}: {seconds:.0f} s", flush=True)


def load(root: Path, name: str) -> dict | None:
    path = root / name / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    clock = root / name / "wall_clock.json"
    metrics["_wall"] = json.loads(clock.read_text())["seconds"] if clock.exists() else None
    metrics["_config"] = yaml.safe_load((root / name / "config.yaml").read_text())
    metrics["_chance"] = chance_of(metrics["_config"])
    return metrics


def diverged(m: dict) -> bool:
    """The training blew up (see `collapse_phase`), read from a run loaded by `load`."""
    return collapse_phase(m["acc_matrix"], m.get("order"), m["_chance"]) is not None


def collapse_phase(acc: list[list[float]], order: list[int] | None, chance: float) -> int | None:
    """The first phase whose own task is at chance right after it (the network no longer learns), None for a run
    that did not blow up; a run ending at chance on every task has its last phase there too. Within 1.2x
    chance: a collapsed network scores its test set's class shares. `order[k]`: the task phase k trains."""
    rows = zip(acc, order or range(len(acc)))
    return next((k for k, (row, t) in enumerate(rows) if row[t] <= 1.2 * chance), None)


def chance_of(config: dict) -> float:
    """1/2 for a task-incremental split run (the task id leaves two classes), 1/10 otherwise."""
    stream = config["stream"]
    return 0.5 if stream["name"] == "split" and stream["scenario"] == "task_incremental" else 0.1


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def kparams(n) -> str:
    return "—" if n is None else f"{n / 1000:.2f}K"


def baseline_params() -> int:
    from cltrain.nn.lenet import LeNet5

    return sum(p.numel() for p in LeNet5(1, 28, 10).parameters())


def accuracy_table(root: Path) -> list[str]:
    lenet = kparams(baseline_params())

    def cell(name: str) -> str:
        m = load(root, name)
        if m is None:
            return "not run"
        if "strict_acc" in m:
            return f"{pct(m['acc'])} (strict {pct(m['strict_acc'])}) / {kparams(m['nonzero_params'])}"
        return f"{pct(m['acc'])} / {lenet}" + (" (diverged)" if diverged(m) else "")

    def paper(stream: str, method: str) -> str:
        value = PAPER[stream].get(method)
        return f"{value[0]:.2f} / {value[1]}" if value else "—"

    out = ["| method | permuted MNIST, 5 tasks: ours | 10 tasks: ours | 20 tasks: ours | paper (20 tasks) "
           "| split MNIST: ours, task-incremental | ours, class-incremental | paper |",
           "|---|---|---|---|---|---|---|---|"]
    for method, names in COMPARISON.items():
        pm5, pm10, pm20, split, split_ci = (cell(name) for name in names)
        out.append(f"| {method} | {pm5} | {pm10} | {pm20} | {paper('pmnist', method)} | {split} | {split_ci} "
                   f"| {paper('split_mnist', method)} |")
    out.append(f"| **TAME** (no ids, no boundaries) | {cell('tame_pmnist')} | {cell('tame_pmnist10')} "
               f"| {cell('tame_pmnist20')} | {paper('pmnist', 'tame')} | — | {cell('tame_split_mnist')} "
               f"| {paper('split_mnist', 'tame')} |")
    return out


def tame_details(root: Path) -> list[str]:
    out = ["| run | ACC (hard routing) | strict | lenient | routing | experts / true tasks | non-zero / total params "
           "| expert sparsity | selector sparsity |", "|---|---|---|---|---|---|---|---|---|"]
    for name in TAME_RUNS:
        m = load(root, name)
        if m is None:
            out.append(f"| {name} | not run | | | | | | | |")
            continue
        sparsity = m["expert_weight_sparsity"]
        sel = m["selector_weight_sparsity"]
        sel = "—" if sel is None else f"{sel:.4f}"
        agree = {True: " (DDP ranks agree)", False: " (DDP ranks DISAGREE)"}.get(m.get("tame_ranks_agree"), "")
        out.append(
            f"| {name}{agree} | {pct(m['acc'])} | {pct(m['strict_acc'])} | {pct(m['lenient_acc'])} | {pct(m['routing_acc'])} "
            f"| {m['n_experts']} / {m['n_true_tasks']} | {kparams(m['nonzero_params'])} / {kparams(m['total_params'])} "
            f"| {min(sparsity):.4f}–{max(sparsity):.4f} | {sel} |")
    return out


def detection_table(root: Path) -> list[str]:
    out = ["| run | true shifts (batch) | detected at | delays (batches) | missed | false | switches |",
           "|---|---|---|---|---|---|---|"]
    for name in TAME_RUNS:
        m = load(root, name)
        if m is None:
            continue
        switches = ", ".join(f"{e['from']}→{e['to']} ({e['kind']})" for e in m["shift_events"])
        out.append(f"| {name} | {m['true_shifts']} | {[e['step'] for e in m['shift_events']]} "
                   f"| {m['tame_detection_delays']} | {m['tame_detection_missed']} | {m['tame_detection_false']} "
                   f"| {switches} |")
    return out


def acc_rows(root: Path) -> list[str]:
    out = []
    for name in RUNS:
        m = load(root, name)
        if m is None:
            continue
        final = ", ".join(f"{100 * v:.1f}" for v in m["acc_matrix"][-1])
        note = " — **diverged** (chance on every task, or on a task right after its own phase)" if diverged(m) else ""
        out.append(f"- `{name}`: final per-task accuracy [{final}]; forgetting {pct(m['forgetting'])}{note}")
    return out


def commands(root: Path) -> list[str]:
    out = ["| run | command | wall time (s, measured) |", "|---|---|---|"]
    for name in RUNS:
        m = load(root, name)
        wall = "not run" if m is None else (f"{m['_wall']:.0f}" if m["_wall"] else f"{m['wall_time_s']:.0f} (in-run)")
        shown = root.relative_to(REPO) if root.is_relative_to(REPO) else root  # commands run from the repo root
        out.append(f"| {name} | `{' '.join(command(name, shown / name))}` | {wall} |")
    return out


def study_sections(path: Path) -> list[str]:
    """The sections scripts/tame_studies.py wrote into the page (kept as they are when the rest is rewritten)."""
    if not path.exists():
        return []
    found = re.finditer(r"<!-- study:(\w+) -->.*?<!-- /study:\1 -->", path.read_text(), re.S)
    return [m.group(0) + "\n" for m in found]


def pruning_rows(root: Path) -> list[str]:
    """Each TAME run's accuracy before and right after its experts' pruning, so forgetting is not pruning loss."""
    out = ["| run | forgetting (vs just-learned, dense) | pruning loss | forgetting after pruning | routing loss "
           "| per task: dense → pruned (expert alone) |", "|---|---|---|---|---|---|"]
    for name in TAME_RUNS:
        m = load(root, name)
        if m is None or "pruning_loss" not in m:
            continue
        pairs = ", ".join(f"{100 * b:.1f}→{100 * a:.1f}" for b, a in zip(m["per_task_acc_before_prune"],
                                                                      m["per_task_acc_after_prune"]))
        out.append(f"| {name} | {pct(m['forgetting'])} | {pct(m['pruning_loss'])} "
                   f"| {pct(m['forgetting_after_pruning'])} "
                   f"| {pct(m['routing_loss'])} | {pairs} |")
    return out


def pick_check(root: Path, names: tuple[str, ...], key: str, column: str,
               figures: Callable[[str, dict], list[float]], intro: list[str], outro: str) -> list[str]:
    """A validation pick beside the grid points run after it on the comparison's stream: `intro`, one row per run
    with a training-time figure per task, then `outro` formatted with the value the last (shipped) run uses;
    nothing until every run finished."""
    runs = [(name, load(root, name)) for name in names]
    if any(m is None for _, m in runs):
        return []
    rows = [f"| run | {dict(lam='λ', c='c')[key]} | {column} | ACC % | diverged |", "|---|---|---|---|---|"]
    for name, m in runs:
        values = ", ".join(f"{v:.2f}".replace("nan", "NaN") for v in figures(name, m))
        rows.append(f"| {name} | {float(m['_config']['learner'][key]):g} | {values} | {pct(m['acc'])} "
                    f"| {'yes' if diverged(m) else 'no'} |")
    shipped = float(runs[-1][1]["_config"]["learner"][key])
    return ["", *intro, "", *rows, "", *outro.format(shipped=shipped).split("\n")]


def stability_lines(root: Path) -> list[str]:
    """Split MNIST EWC: validation's best λ against the shipped one, with lr·λ·ΣF_max after each task."""
    from ewc_stiffness import products  # scripts/ is on sys.path when run as a script

    def product(name: str, m: dict) -> list[float]:
        return products(root / name, 0.02, float(m["_config"]["learner"]["lam"]))

    return pick_check(
        root, ("split_mnist_ewc_lam1000", "split_mnist_ewc"), "lam", "lr·λ·ΣF_max after each task", product,
        ["Split MNIST's EWC: validation's best point (λ = 1000) was run on the full stream as well. A training-time",
         "check, lr·λ·ΣF_max after each task against SGD-momentum's stability bound 2(1 + 0.9) = 3.8",
         "(the run's `fisher_peaks` record, the Fishers' summed peak; no test data), separates the two:"],
        "`tame/split_mnist_ewc` therefore ships λ = {shipped:g}, the best grid point whose run stays below the bound.")


def si_pick_lines(root: Path) -> list[str]:
    """Permuted MNIST's SI: validation's best c against the shipped one on the 20-task stream."""
    return pick_check(
        root, ("pmnist20_si_c10", "pmnist20_si_c3", "pmnist20_si"), "c", "final training loss per phase",
        lambda name, m: phase_end_losses(root, name, m),
        ["Permuted MNIST's SI: validation's best point (c = 10, picked at 20,000 images per task on 5 tasks) and",
         "the grid points below it were run on the shipped 20-task stream. The training-time check is each",
         "phase's final training loss (the mean of its last 4 logged values; NaN: the loss overflowed):"],
        "`tame/pmnist_si` therefore ships c = {shipped:g}, the best grid point whose 20-task run keeps\n"
        "learning in every phase. SI's importance sums grow with every task, so a c the 5-task grid finds stable\n"
        "can still overflow later in a longer stream.")


def si_ci_lines(root: Path) -> list[str]:
    """Class-incremental SI's own validation grid (seed 0) and the c its comparison run uses."""
    runs = {c: load(root, f"split_mnist_si_ci_val_c{c}") for c in SI_CI_GRID}
    if any(m is None for m in runs.values()):
        return []
    pick = max(runs, key=lambda c: runs[c]["val_acc"])
    out = ["", "Split MNIST's SI, class-incremental: the task-incremental pick (c = 100) collapses here (every task",
           "after the first at 0 % right after its own phase), so the class-incremental run has its own grid,",
           "picked by validation ACC (`stream.val_fraction=0.1`, seed 0; the `split_mnist_si_ci_val_*` runs):", "",
           "| c | val ACC % | test ACC % | diverged | picked |", "|---|---|---|---|---|"]
    for c, m in runs.items():
        edge = " (grid edge)" if c == pick and c in (SI_CI_GRID[0], SI_CI_GRID[-1]) else ""
        out.append(f"| {c} | {pct(m['val_acc'])} | {pct(m['acc'])} | {'yes' if diverged(m) else 'no'} "
                   f"| {'**yes**' + edge if c == pick else ''} |")
    out.append("")
    out.append(f"`split_mnist_si_ci` runs with c = {SI_CI_C}" + ("." if pick == SI_CI_C else
               f", but the grid now picks {pick}: set SI_CI_C in scripts/reproduce_tame.py and rerun it."))
    return out


def collapse_lines(root: Path) -> list[str]:
    """The comparison's diverged baselines: where each fell to chance, and its logged training loss."""
    out = []
    for name in [name for names in COMPARISON.values() for name in names]:
        m = load(root, name)
        if m is None or not diverged(m):
            continue
        phase = collapse_phase(m["acc_matrix"], m.get("order"), m["_chance"])
        loss = _logged(root, name, "train/loss")
        where = f"the task of phase {phase + 1} ends its own phase at chance"
        if loss:
            peak = max(loss, key=lambda sl: sl[1])
            where += (f"; its logged training loss peaks at {peak[1]:.2f} (step {peak[0]}) and ends at {loss[-1][1]:.3f}"
                      f" (ln 10 = 2.303: a constant output)")
        out.append(f"  - `{name}`: {where}.")
    if not out:
        return ["- No baseline in the comparison diverged; the runs that did while their shipped values were chosen",
                "  are in \"Baseline tuning\"."]
    return ["- Diverged baselines in the comparison: the shared SGD (lr 0.02, momentum 0.9) is at its stability",
            "  edge for LeNet on permuted MNIST at this seed:", *out]


def _logged(root: Path, name: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one key in a run's Lightning CSV logs (written every 50 steps). A resumed run logs into a
    new version_N from the checkpoint's step on: every version is read in order and a step logged twice (after a
    kill, between the checkpoint and the kill) takes the resumed run's value."""
    logs = sorted((root / name / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    by_step: dict[int, float] = {}
    for log in logs:
        with log.open() as f:
            by_step.update((int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key))
    return sorted(by_step.items())


def phase_end_losses(root: Path, name: str, m: dict) -> list[float]:
    """Each phase's final training loss: the mean of its last 4 logged values (a training-time figure; a
    collapsed network sits at ln 10 = 2.30). Phases of one epoch each: the same number of steps in each."""
    loss, per = _logged(root, name, "train/loss"), m["steps"] // m["n_phases"]
    tails = [[v for s, v in loss if k * per <= s < (k + 1) * per][-4:] for k in range(m["n_phases"])]
    return [sum(t) / len(t) if t else float("nan") for t in tails]


def finetune_cap(root: Path) -> str:
    """The gradient cap the permuted-MNIST fine-tuning runs used ("none" before they ran)."""
    m = load(root, "pmnist_finetune")
    cap = m["_config"]["optim"].get("grad_clip_norm") if m else None
    return "none" if cap is None else f"{cap:g}"


def cap_lines(root: Path) -> list[str]:
    """Fine-tuning's gradient cap on 10 and 20 permuted tasks, judged on training-time figures only."""
    loaded = [(name, load(root, name)) for name in CAP_RUNS]
    if any(m is None for _, m in loaded):
        return []
    shipped = loaded[-1][1]["_config"]["optim"]["grad_clip_norm"]
    out = ["", "### Fine-tuning's cap (`optim.grad_clip_norm`)", "",
           "Fine-tuning has no strength to tune, and without a cap its SGD killed the network early in phase 10 of",
           f"the 10- and 20-task streams. `tame/pmnist_finetune` caps each step's gradient at a global L2 norm of {shipped:g}.",
           "The cap was set from training-time figures alone (no validation or test accuracy): the gradient norms",
           "each run logs (every 50 steps, before clipping; a cap of 1e6 is never reached, so that run is the uncapped",
           "one, bit for bit) and each phase's final training loss (the mean of its last 4 logged values; ln 10 = 2.30",
           "is a network with a constant output). The largest cap tried under which no phase of the 20-task stream",
           "collapsed is shipped.",
           "EWC and SI run uncapped: no run at their picks collapsed.", "",
           "| run | tasks | cap | grad norm inside phases | first logged step on a new task | sampled steps over the cap "
           "| final training loss per phase | diverged | ACC % |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, m in loaded:
        norms = _logged(root, name, "train/grad_norm")
        per = m["steps"] // m["n_phases"]  # one epoch per phase: the same number of steps in each
        first, inside = [], []
        for k in range(m["n_phases"]):
            phase = [v for s, v in norms if k * per <= s < (k + 1) * per]
            # a phase's first sample is one of its first 50 steps on a new task, where Lightning's every-50-steps
            # cadence (counted over the run) falls in it; phase 1 starts from the fresh network and is left out
            first, inside = first + (phase[:1] if k else []), inside + phase[1:]
        ends = ", ".join(f"{v:.2f}" for v in phase_end_losses(root, name, m))
        cap = m["_config"]["optim"]["grad_clip_norm"]
        over = sum(v > cap for _, v in norms)
        out.append(f"| {name} | {m['n_phases']} | {cap:g} "
                   f"| {min(inside):.2f}–{max(inside):.2f} | {min(first):.1f}–{max(first):.1f} "
                   f"| {over} of {len(norms)} | {ends} | {'yes' if diverged(m) else 'no'} | {pct(m['acc'])} |")
    out += ["", "A cap acts on every step whose norm is over it; the norms of the capped runs are the ones their own",
            "trajectories produced, so they differ from the uncapped run's after its first capped step. The logs",
            "sample every 50th step of the run, so a new task's first logged step is one of its first 50 (not its very",
            "first, which is not sampled)."]
    return out


def seed_rows(root: Path) -> list[str]:
    """Mean ± sd over seeds 0-2 of the 5-task TAME runs, with the parts of the gap to a perfect score."""
    out = ["| run | seeds | ACC % | strict % | routing % | non-zero params | pruning loss | routing loss "
           "| missed / false shifts | paper |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in SEEDED:
        runs = [m for m in (load(root, n) for n in (name, f"{name}_s1", f"{name}_s2")) if m is not None]
        if not runs:
            continue

        def stat(key: str, scale: float = 100.0, digits: int = 2) -> str:
            values = np.array([scale * m[key] for m in runs], dtype=float)
            return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.{digits}f}"

        missed = sum(m["tame_detection_missed"] for m in runs)
        false = sum(m["tame_detection_false"] for m in runs)
        paper = PAPER["pmnist" if "pmnist" in name else "split_mnist"]["tame"]
        out.append(f"| {name} | {len(runs)} | {stat('acc')} | {stat('strict_acc')} | {stat('routing_acc')} "
                   f"| {stat('nonzero_params', 1e-3)}K | {stat('pruning_loss')} | {stat('routing_loss')} "
                   f"| {missed} / {false} | {paper[0]:.2f} / {paper[1]} |")
    return out


REASONS = {  # the budget behind each part of a gap, where ours is cut from the paper's
    "pruning": ": at our budget the pruned experts are fine-tuned for 10 epochs on the pruning buffer, against the "
               "paper's 200.",
    "routing": ": our selector trains for 15 epochs (the paper: 200, then 200 more after its pruning).",
}
# Where scripts/tame_studies.py measures each headline run's gap one factor at a time (sections of this page)
MEASURED = {
    "tame_pmnist20": "the sections \"Permuted MNIST, 5 tasks: the gap to the paper at the shipped scale\" (longer "
                     "pruning fine-tuning, longer training per task) and \"Permuted MNIST, 20 tasks: the gap to the "
                     "paper at the shipped scale\" (the longer fine-tuning on this stream)",
    "tame_split_mnist": "the section \"Split MNIST: the gap to the paper at the shipped scale\" (the selector's "
                        "schedule, learning rate and buffer size)",
}
LENIENT_DIFFERS = 5e-4  # lenient and routed ACC differ: the tasks have classes of their own (split, not permuted)


def gap_bullets(root: Path) -> list[str]:
    """Each headline TAME run's gap to the paper, split into the experts' own accuracy, pruning and routing."""
    return [*gap_bullet(root, "tame_pmnist20", "pmnist", "20 permuted tasks (the paper's count"),
            *prune_budget_line(root),
            *gap_bullet(root, "tame_split_mnist", "split_mnist", "Split MNIST (class-incremental")]


def gap_bullet(root: Path, name: str, paper_key: str, label: str) -> list[str]:
    m = load(root, name)
    if m is None or "pruning_loss" not in m:
        return [f"- {label}, `{name}`): not run in this regeneration."]
    acc, paper_acc = 100 * m["acc"], PAPER[paper_key]["tame"][0]
    dense = 100 * float(np.mean(m["per_task_acc_before_prune"]))
    parts = {"pruning": 100 * m["pruning_loss"], "routing": 100 * m["routing_loss"],
             "drift after pruning": 100 * m["expert_drift_after_pruning"]}
    largest = max(parts, key=parts.get)
    dense_vs_paper = ("above the paper's figure" if dense >= paper_acc
                      else f"{paper_acc - dense:.2f} points below the paper's figure")
    return [
        f"- {label}, `{name}`): {acc:.2f} % vs the paper's {paper_acc:.2f} %, "
        f"and {kparams(m['nonzero_params'])} non-zero parameters vs {PAPER[paper_key]['tame'][1]} "
        f"({kparams(m['selector_nonzero_params'])} of ours are the selector, the experts hold "
        f"{kparams(sum(m['expert_nonzero_params']))}).",
        f"  Where the accuracy goes (means over the {len(m['per_task_acc_before_prune'])} tasks, from the table "
        f"\"Pruning loss and forgetting, apart\"): each expert alone reaches {dense:.2f} % dense ({dense_vs_paper}); "
        f"pruning it to 98 % costs {parts['pruning']:.2f} points, its drift after pruning "
        f"{parts['drift after pruning']:.2f} and routing {parts['routing']:.2f} (the selector picks the right expert "
        f"for {pct(m['routing_acc'])} % of the test images; missed shifts: {m['tame_detection_missed']}). "
        f"The largest part is {largest}" + REASONS.get(largest, "."),
        *lenient_line(m),
        *([f"  Measured one factor at a time: {MEASURED[name]}, below."] if name in MEASURED else []),
    ]


def lenient_line(m: dict) -> list[str]:
    """The run in the paper's code's metric, where it differs from ours (tasks with classes of their own)."""
    if abs(m["lenient_acc"] - m["acc"]) < LENIENT_DIFFERS:
        return []
    return [f"  In the paper's code's metric (lenient: a prediction counts when its index within its task's classes "
            f"matches, whichever expert made it) the same run reads {pct(m['lenient_acc'])} % (strict "
            f"{pct(m['strict_acc'])} %, routing {pct(m['routing_acc'])} %: table \"TAME in detail\")."]


def prune_budget_line(root: Path) -> list[str]:
    """The pruning loss with 5x the fine-tuning epochs after pruning (5 permuted tasks, seed 0), if run."""
    ref, more = load(root, "tame_pmnist"), load(root, "tame_pmnist_prune50")
    if ref is None or more is None:
        return []
    return [f"  The fine-tuning budget tested (`tame_pmnist_prune50`: 5 permuted tasks, `learner.expert_prune_epochs=50` "
            f"instead of 10, seed 0): pruning loss {pct(more['pruning_loss'])} vs {pct(ref['pruning_loss'])} points, "
            f"ACC {pct(more['acc'])} vs {pct(ref['acc'])} %, wall time {more['_wall'] or 0:.0f} vs "
            f"{ref['_wall'] or 0:.0f} s."]


def write_doc(root: Path, path: Path) -> None:
    text = "\n".join([
        "# TAME in cltrain: CPU-scale reproduction",
        "",
        "Generated by `scripts/reproduce_tame.py` from the runs under "
        f"`{root.relative_to(REPO) if root.is_relative_to(REPO) else root}`; every number below is read from those runs' `metrics.json` except the columns marked *paper*.",
        "Machine: 2 CPU cores shared with other jobs (wall times are noisy), no GPU; one intra-op thread per run.",
        "",
        "## Scale: what was cut and why",
        "",
        "| | paper | here (CPU scale) |",
        "|---|---|---|",
        "| permuted MNIST | 20 tasks, 10 epochs/task, full test set | 5, 10 and 20 tasks, 1 epoch/task (469 batches), "
        "2,000 test images/task |",
        "| split MNIST | 5 tasks, 10 epochs/task | 5 tasks, 2 epochs/task (~190 batches) |",
        "| C_s / C_p | 5000 / 6000 | 5000 / 6000 |",
        "| selector | 200 epochs, pruned 50% + 200 epochs | 15 epochs, pruned 50% + 3 epochs |",
        "| expert pruning | (never called in the reference code) | 98%, 3 rounds, 10 epochs on the pruning buffer |",
        "| expert training | SGD 0.1 / 0.9 / 5e-4 on the bounded loss | SGD 0.02 / 0.9 / 5e-4 on plain cross-entropy |",
        "| window / α / k | 100 / 0.2 / 3 | 100 / 0.2 / 3 (detection on the bounded loss) |",
        "",
        "The paper's settings are `tame/pmnist_full` and `tame/split_mnist_full` (not run here: hours on 2 cores).",
        "",
        "## Accuracy and parameters beside the paper",
        "",
        "`tame_recurring` is permuted MNIST in the order [0, 1, 2, 1, 3]; `tame_split_fashion` is split Fashion-MNIST;",
        "`tame_split_mnist_ddp` is `tame_split_mnist` under DDP (2 gloo processes, same seed and global batch).",
        "",
        "ACC is the framework's accuracy with hard routing (`predict(x, None)`), averaged over tasks after the last phase;",
        "for TAME the strict variant (right expert *and* right class) is in brackets; parameters are non-zero counts",
        "(experts + selector). Baselines are task-aware, as in the paper: on permuted MNIST they only get the boundaries",
        "(one shared head); on split MNIST the task id also masks the head (task-incremental), which is the easier",
        "setting the paper's baseline numbers come from. TAME gets neither ids nor boundaries. Fine-tuning on permuted",
        f"MNIST caps its gradient norm at {finetune_cap(root)} (without a cap the network died on 10 and 20 tasks: "
        "\"Fine-tuning's cap\").",
        "",
        *accuracy_table(root),
        "",
        "## Across seeds",
        "",
        "`tame_split_mnist` and `tame_pmnist` (5 tasks) at seeds 0, 1 and 2 (`seed=1`, `seed=2`; every other",
        "setting as above); mean ± sd over the seeds. Pruning loss: each task's expert alone, dense minus right",
        "after its pruning; routing loss: expert alone at the end minus routed (table \"Pruning loss and",
        "forgetting, apart\"); points. The paper's column is 20 tasks for permuted MNIST.",
        "",
        *seed_rows(root),
        "",
        "## TAME in detail",
        "",
        "strict: right expert and right class; lenient (the paper's code): the prediction's index within its task's",
        "classes matches (a wrong expert can still be right); routing: the selector picks the expert that trained on",
        "the sample's task (the majority expert over that task's batches).",
        "",
        *tame_details(root),
        "",
        "## Shift detection (TAME's own detector, scored against the true boundaries)",
        "",
        *detection_table(root),
        "",
        "Each run folder has `detection.png` (active expert's loss, detected and true boundaries).",
        "",
        "## Pruning loss and forgetting, apart",
        "",
        "The framework's forgetting compares each task with its just-learned accuracy, taken before its expert is",
        "pruned (at the next detected shift), so it holds the pruning loss. Here each task is also scored right after",
        "its expert's pruning (the expert alone): pruning loss = dense − pruned; forgetting after pruning = pruned −",
        "final routed accuracy (tasks before the last phase); routing loss = final expert alone − final routed.",
        "",
        *pruning_rows(root),
        "",
        "## Baseline tuning",
        "",
        "EWC's λ and SI's c in the experiment files were picked by validation ACC over a stated grid (SI's widened",
        "until the pick lay inside; EWC's end where a larger λ diverges, shown below): the section",
        "\"Baselines for the comparison: picked on validation\" below (scripts/tame_studies.py baselines).",
        *stability_lines(root),
        *si_pick_lines(root),
        *si_ci_lines(root),
        *cap_lines(root),
        "",
        "## Per-run final accuracies",
        "",
        *acc_rows(root),
        "",
        "## Commands and wall times",
        "",
        "All with `OMP_NUM_THREADS=1 CLTRAIN_DATA=/work/shared/data`. Reproduce everything with",
        "`.venv/bin/python scripts/reproduce_tame.py` (finished runs are skipped).",
        "",
        *commands(root),
        "",
        "## Gaps (honest account)",
        "",
        "- Scale: 1–2 instead of 10 epochs per task; the selector and pruning",
        "  fine-tuning run for far fewer epochs than the paper's 200. The numbers are not the paper's experiment.",
        "- Expert training deviates from the paper: plain cross-entropy at lr 0.02 instead of the bounded loss at",
        "  lr 0.1. With our 10-way heads (the paper's split-MNIST experts have 2 outputs) bounded training saturated",
        "  both seen classes' sigmoids and stalled at chance, and plain CE at lr 0.1 diverged (measured while building",
        "  this). Detection still uses the bounded loss, as the spec asks.",
        "- Expert pruning to 98% costs accuracy on permuted MNIST at this fine-tuning budget (a probe on one permuted",
        "  task: 92.5% dense → 83.4% pruned); the paper's 200 fine-tuning epochs are not affordable here.",
        "- Split-MNIST baselines are task-incremental (task id masks the head), as the paper's are; TAME is evaluated",
        "  class-incremental without any task id, a harder protocol.",
        "- Baselines: one optimizer (SGD 0.02 / 0.9 / 5e-4) for all, as TAME's experts (fine-tuning on permuted",
        f"  MNIST with its gradient norm capped at {finetune_cap(root)}: \"Fine-tuning's cap\"); EWC's λ and SI's c picked",
        "  on validation at reduced scale (section below). Runs marked *diverged* ended at chance on every task, or",
        "  on a task right after its own phase (the network stopped learning). The paper's baseline numbers come",
        "  from the paper's own tuning.",
        *collapse_lines(root),
        *gap_bullets(root),
        "- Seeds: 0, 1 and 2 for the two 5-task TAME runs (section \"Across seeds\"); one seed (0) for every other",
        "  run, so their single figures carry a spread of the size shown there.",
        "- Not run: split CIFAR-100 (VGG11 experts), the pruning-buffer ablation, A-GEM / CN-DPM / DEN baselines.",
        "",
        *study_sections(path),
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"[reproduce] wrote {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/tame_repro", help="folder holding one run folder per run")
    parser.add_argument("--only", nargs="*", default=None, help=f"run only these: {', '.join(RUNS)}")
    parser.add_argument("--doc", default="docs/results/tame.md")
    parser.add_argument("--no-run", action="store_true", help="only rewrite the document from finished runs")
    add_keep_option(parser, "docs/results/runs/tame_repro")
    args = parser.parse_args()
    root = (REPO / args.runs).resolve() if not Path(args.runs).is_absolute() else Path(args.runs)
    root.mkdir(parents=True, exist_ok=True)
    kept = from_option(parser, args.keep, root)
    if not args.no_run:
        for name in args.only or RUNS:
            run_one(name, root)
            if kept is not None:  # with its training log: the cap and divergence lines read the logged loss
                try:
                    keep_beside(root / name, root, kept, logs=True)
                except ConfigError as exc:  # a different run of that name kept before: stop, nothing overwritten
                    print(f"reproduce_tame: error: {exc}", file=sys.stderr)
                    sys.exit(2)
    refuse_partial_page(parser, [name for name in RUNS if load(root, name) is None], len(RUNS), root, args.doc)
    write_doc(root, REPO / args.doc)


if __name__ == "__main__":
    main()
