"""Writes docs/results/powerlaw.md from the runs of scripts/reproduce_powerlaw.py (numbers are read, never typed)."""
from __future__ import annotations

import csv
import json
import math
import os
import platform
from pathlib import Path

import numpy as np

from cltrain.report import mean_sd

PAPER_V3 = {  # class-incremental final accuracy, 5 seeds (spec: shared/docs/methods/powerlaw.md)
    "powerlaw": 0.959, "uniform": 0.965, "joint": 0.978,
}
LITERATURE_PMNIST = {"none": 0.78, "ewc": 0.94, "si": 0.95, "joint": 0.98}  # 2x1000 MLP, full protocol


def _by_condition(root: Path) -> dict[str, list[dict]]:
    """condition folder name -> list of metrics.json of its seeds."""
    out: dict[str, list[dict]] = {}
    if not root.exists():
        return out
    for cond in sorted(p for p in root.iterdir() if p.is_dir()):
        runs = []
        for m in sorted(cond.glob("seed*/metrics.json")):
            run = json.loads(m.read_text())
            with open(m.parent / "schedule_counts.csv") as handle:
                rows = list(csv.reader(handle))[1:]
            run["_samples"] = _new_task_samples(run, [[int(v) for v in r[2:-1]] for r in rows])
            samples = [v for v in run["_samples"][1:] if v is not None]
            run["_samples_mean"] = float(np.mean(samples)) if samples else math.nan
            run["_counts"] = [[int(v) for v in r[2:-1]] for r in rows]
            run["seed"] = int(m.parent.name.removeprefix("seed"))
            runs.append(run)
        if runs:
            out[cond.name] = runs
    return out


def _cell(values: list[float], digits: int = 3) -> str:
    mean, sd = mean_sd(values)
    return "—" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _table(data: dict[str, list[dict]], order: list[str]) -> str:
    cols = [("ACC", "acc", 3), ("BWT", "bwt", 3), ("forgetting", "forgetting", 3),
            ("iters to 90%", "facilitation_iters_mean", 1), ("new-task samples to 90%", "_samples_mean", 0),
            ("train acc @50 it", "facilitation_acc_mean", 3),
            ("wall time (s)", "wall_time_s", 1)]
    lines = ["| condition | seeds | " + " | ".join(c[0] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name in [n for n in order if n in data]:
        runs = data[name]
        cells = [_cell([r.get(key, math.nan) for r in runs], d) for _, key, d in cols]
        cells = [c.replace(".0 ±", " ±") if d == 0 else c for c, (_, _, d) in zip(cells, cols)]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean(data, name, key="acc"):
    return mean_sd([r.get(key, math.nan) for r in data.get(name, [])])[0]


def _verdict(ours_a: float, ours_b: float, margin: float = 0.005) -> str:
    if math.isnan(ours_a) or math.isnan(ours_b):
        return "not measured"
    if ours_a > ours_b + margin:
        return "superior"
    return "comparable" if ours_a >= ours_b - margin else "worse"


def _new_task_samples(run: dict, counts: list[list[int]]) -> list:
    """New-task samples seen until the criterion, per task: recorded by newer runs; for older runs the
    expectation iterations x batch x (new task's share of the phase's data), from schedule_counts.csv."""
    fac = run.get("facilitation", {})
    if fac.get("samples_to_criterion"):
        return fac["samples_to_criterion"]
    out = []
    for k, iters in enumerate(fac.get("iters_to_criterion", [])):
        row = counts[k]
        out.append(None if iters is None else iters * 128 * row[k] / sum(row))
    return out


def _facilitation_slope(runs: list[dict], key: str = "iters") -> float:
    """Mean over seeds of the least-squares slope of iterations (or new-task samples) to criterion
    against the task index (tasks >= 1)."""
    slopes = []
    for r in runs:
        values = r["_samples"] if key == "samples" else r.get("facilitation", {}).get("iters_to_criterion", [])
        pts = [(i + 1, v) for i, v in enumerate(values[1:]) if v is not None]
        if len(pts) >= 2:
            x, y = np.array(pts, dtype=float).T
            slopes.append(float(np.polyfit(x, y, 1)[0]))
    return float(np.mean(slopes)) if slopes else math.nan


def _claims(main: dict) -> str:
    pl = _mean(main, "powerlaw")
    rows = [
        ("power law vs EWC (no rehearsal)", "comparable or superior", _verdict(pl, _mean(main, "ewc"))),
        ("power law vs SI (no rehearsal)", "comparable or superior", _verdict(pl, _mean(main, "si"))),
        ("power law vs uniform rehearsal, same budget (stored / exposure)", "comparable or superior",
         f"{_verdict(pl, _mean(main, 'uniform'))} / {_verdict(pl, _mean(main, 'uniform_exposure'))}"),
        ("power law vs exponential rehearsal, same budget (stored / exposure)", "comparable or superior",
         f"{_verdict(pl, _mean(main, 'exponential'))} / {_verdict(pl, _mean(main, 'exponential_exposure'))}"),
        ("power law + EWC vs power law", "orthogonal (combinable)", _verdict(_mean(main, "powerlaw_ewc"), pl)),
    ]
    lines = ["| claim (v1, permuted MNIST) | paper | ours (ACC) |", "|---|---|---|"]
    lines += [f"| {c} | {p} | {o} |" for c, p, o in rows]
    slope_pl = _facilitation_slope(main.get("powerlaw", []))
    slope_none = _facilitation_slope(main.get("none", []))
    lines.append(f"| forward facilitation: iterations to 90% fall over tasks | yes (power law) | slope "
                 f"{slope_pl:+.2f} it/task with power law, {slope_none:+.2f} without rehearsal |")
    s_pl = _facilitation_slope(main.get("powerlaw", []), "samples")
    s_none = _facilitation_slope(main.get("none", []), "samples")
    lines.append(f"| the same in new-task samples (rehearsal dilutes each batch) | — | slope {s_pl:+.0f} samples/task "
                 f"with power law, {s_none:+.0f} without rehearsal |")
    return "\n".join(lines) + "\n"


def _reference(main: dict) -> str:
    lines = ["| method | literature (full protocol) | ours (CPU scale) |", "|---|---|---|"]
    for name, value in LITERATURE_PMNIST.items():
        lines.append(f"| {name} | {value:.2f} | {_cell([r['acc'] for r in main.get(name, [])])} |")
    return "\n".join(lines) + "\n"


def _split(split: dict, order: list[str]) -> str:
    lines = ["| environment | matching | paper v3 (5 seeds) | ours |", "|---|---|---|---|"]
    matching = {"powerlaw": "(reference)", "none": "—", "joint": "—", **{name: m for name, m in MATCHED}}
    for name in [n for n in order if n in split]:
        paper = PAPER_V3.get(name)
        lines.append(f"| {name} | {matching.get(name, '—')} | {paper if paper is not None else '—'} | "
                     f"{_cell([r['acc'] for r in split[name]])} |")
    return ("\n".join(lines) + "\n\nPaired by seed, as above (no probe here: ACC and forgetting only):\n\n"
            + _comparison_table(split) + "\n" + _table(split, order))


def _sweeps(root: Path) -> str:
    out = []
    for factor_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        lines = [f"**{factor_dir.name}** (seed 0; ACC / forgetting)", "",
                 "| value | power law | uniform |", "|---|---|---|"]
        for value_dir in sorted((p for p in factor_dir.iterdir() if p.is_dir()), key=lambda p: float(p.name.split("x")[0])):
            cells = []
            for cond in ("powerlaw", "uniform"):
                m = value_dir / cond / "seed0" / "metrics.json"
                cells.append("—" if not m.exists() else
                             "{acc:.3f} / {forgetting:.3f}".format(**json.loads(m.read_text())))
            lines.append(f"| {value_dir.name} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _total_time(root: Path) -> float:
    return sum(json.loads(m.read_text())["wall_time_s"] for m in root.rglob("metrics.json"))


MATCHED = [  # (rival, matching) pairs the power law is compared with, each budget matched to it
    ("uniform", "stored"), ("exponential", "stored"), ("uniform_exposure", "exposure"),
    ("exponential_exposure", "exposure"),
]


def _by_seed(runs: list[dict], key) -> dict[int, float]:
    """seed -> figure (key: a metrics.json key or a function of the run); NaN/None left out."""
    out = {}
    for r in runs:
        value = key(r) if callable(key) else r.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[r["seed"]] = float(value)
    return out


def _paired(a: list[dict], b: list[dict], key, lower_is_better: bool = False) -> tuple[list[float], str]:
    """Differences a - b over the seeds both have (same seed: same initial weights, same new-task data), and a
    plain verdict from the 95% t-interval of their mean."""
    sa, sb = _by_seed(a, key), _by_seed(b, key)
    diffs = [sa[s] - sb[s] for s in sorted(set(sa) & set(sb))]
    if len(diffs) < 2:
        return diffs, "not measured (fewer than 2 paired seeds)"
    from scipy import stats

    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    lo, hi = mean - half, mean + half
    if lo > 0 or hi < 0:
        word = "power law " + ("worse" if (lo > 0) == lower_is_better else "better")
    else:
        word = "no difference resolved"
    return diffs, f"{word} (95% CI of the mean difference [{lo:+.4f}, {hi:+.4f}], n = {len(diffs)})"


def _probe_auc(run: dict, phases=slice(1, None)) -> float:
    values = [p["auc"] for p in run.get("probe", {}).get("phases", [])][phases]
    return float(np.mean(values)) if values else math.nan


def _facilitation(run: dict) -> float:
    """Mean over phases 1.. of the probe's AUC minus phase 0's (the same budget from the initial weights)."""
    phases = run.get("probe", {}).get("phases", [])
    if len(phases) < 2:
        return math.nan
    return float(np.mean([p["auc"] for p in phases[1:]]) - phases[0]["auc"])


PROBE_LEVEL = 0.8  # the probe's 50 steps at this scale rarely reach its recorded 0.9 threshold


def _probe_steps(run: dict, level: float = PROBE_LEVEL) -> float:
    """Mean over phases 2.. of the first scored step at or above `level`, read from the stored curves (phases
    that never reach it are left out)."""
    values = []
    for p in run.get("probe", {}).get("phases", [])[1:]:
        hit = [s for s, a in zip(p["steps"], p["acc"]) if a >= level]
        values += hit[:1]
    return float(np.mean(values)) if values else math.nan


def _probe_final(run: dict) -> float:
    values = [p["final"] for p in run.get("probe", {}).get("phases", [])[1:]]
    return float(np.mean(values)) if values else math.nan


def _rehearsal_share(run: dict) -> float:
    """Mean over phases 1.. of the old tasks' share of the phase's data (= of the samples presented, in
    expectation: every phase draws the same number of batches)."""
    rows = run["_counts"][1:]
    return float(np.mean([1 - r[k + 1] / sum(r) for k, r in enumerate(rows)])) if rows else math.nan


def _matching_table(main: dict) -> str:
    cols = [("ACC", lambda r: r["acc"], 3), ("forgetting", lambda r: r["forgetting"], 3),
            ("rehearsal share of phases 2–10", _rehearsal_share, 3),
            ("probe AUC, phases 2–10", _probe_auc, 3), ("probe AUC, phase 1 (from scratch)",
                                                      lambda r: _probe_auc(r, slice(0, 1)), 3),
            ("facilitation (AUC gain)", _facilitation, 3), ("probe acc at the end, phases 2–10", _probe_final, 3),
            (f"probe steps to {PROBE_LEVEL:.0%}", _probe_steps, 1)]
    lines = ["| condition | matching | seeds | " + " | ".join(c[0] for c in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    matching = {"powerlaw": "(reference)", "none": "—", **{name: m for name, m in MATCHED}}
    for name in ["none", "powerlaw", *[n for n, _ in MATCHED]]:
        runs = main.get(name, [])
        if runs:
            cells = [_cell([f(r) for r in runs], d) for _, f, d in cols]
            lines.append(f"| {name} | {matching[name]} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _comparison_table(main: dict) -> str:
    pl = main.get("powerlaw", [])
    lines = ["| power law − rival | matching | figure | per seed | mean ± sd | verdict |", "|---|---|---|---|---|---|"]
    for rival, matching in MATCHED:
        for label, key, lower in (("ACC", "acc", False), ("forgetting", "forgetting", True),
                                  ("probe AUC", _probe_auc, False)):
            diffs, verdict = _paired(pl, main.get(rival, []), key, lower)
            if not diffs:
                continue
            per_seed = ", ".join(f"{d:+.4f}" for d in diffs)
            lines.append(f"| {rival} | {matching} | {label} | {per_seed} | {_cell(diffs, 4)} | {verdict} |")
    return "\n".join(lines) + "\n"


def _probe_by_phase(main: dict) -> str:
    names = [n for n in ["none", "powerlaw", *[n for n, _ in MATCHED], "joint"] if n in main]
    if not names:
        return "No runs.\n"
    n_phases = max(len(r.get("probe", {}).get("phases", [])) for n in names for r in main[n])
    lines = ["| condition | " + " | ".join(f"{k + 1}" for k in range(n_phases)) + " |",
             "|---|" + "---|" * n_phases]
    for name in names:
        cells = []
        for k in range(n_phases):
            values = [r["probe"]["phases"][k]["auc"] for r in main[name] if len(r.get("probe", {}).get("phases", [])) > k]
            cells.append(f"{np.mean(values):.3f}" if values else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tight(tight: dict) -> str:
    if not tight:
        return "Not run (the default command runs it; `--full` does not).\n"
    return f"{_comparison_table(tight)}\n{_matching_table(tight)}"


def _scale(args) -> str:
    if args.full:
        return "the paper's protocol: MLP 784-1000-1000-10, Adam 1e-4, batch 128, 5,000 iterations per task"
    return ("CPU scale: MLP 784-100-100-10, Adam 1e-3, batch 128, 500 iterations per task, 2,000 test images per "
            "task (the paper: 784-1000-1000-10, Adam 1e-4, 5,000 iterations; `--full`)")


def write_doc(path: Path, root: Path, args) -> None:
    main, split = _by_condition(root / "main"), _by_condition(root / "split")
    tight = _by_condition(root / "tight")
    order = ["none", "powerlaw", "uniform", "exponential", "uniform_exposure", "exponential_exposure", "joint",
             "ewc", "si", "powerlaw_ewc"]
    probe = next((r["probe"] for runs in main.values() for r in runs if "probe" in r), None)
    probe_text = ("not recorded" if probe is None else
                  f"{probe['steps']} steps, scored every {probe['eval_every']} steps, threshold {probe['threshold']}")
    text = f"""# Power-law rehearsal: our runs beside the paper

Generated by `python scripts/reproduce_powerlaw.py{' --full' if args.full else ''}` (with `CLTRAIN_DATA` set; on 2
cores `--shard 0/2` and `--shard 1/2` side by side, then `--report-only`); every number below is read from the
run folders under `{_shown(root)}/`, {_run_dates(root)}. Machine: {platform.machine()},
{os.cpu_count()} cores shared with other jobs; one torch thread per run; total training wall time of the runs:
{_total_time(root) / 60:.1f} min.

Paper: Gandhi, Shah, Marupudi, Varma, *Catastrophic Interference is Mitigated in Naturalistic Power-Law
Learning Environments* (arXiv 2401.10393). Environment: phase k trains on the new task plus
n(x) = N·x^(−b) samples of every older task of age x, b = ln(1/p_min)/ln(T−1), p_min = 0.10, nested subsets.
Every phase draws the same number of batches (500 of 128), whatever its data. Uniform and exponential
rehearsal are budget matched to the power law in one of two ways (`stream.rehearsal.match`):

- **stored** (the default): the same total number of rehearsed samples over the whole run. Uniform gives every
  old task the same count in every phase, so it stores less than the power law early and more late: the old
  tasks' share of each phase, hence of the samples presented, differs from the power law's phase by phase.
- **exposure**: every phase rehearses exactly the power law's number of samples, spread over the old tasks by
  the rival's rule (equal counts; exponential decay with age, the rate fitted per phase). Each phase then
  presents the same number of rehearsal and new-task samples under every schedule, exactly for one seed
  (tests/test_schedules.py counts them on a real run); only which old tasks they come from differs.

## Permuted MNIST, 10 tasks ({_scale(args)})

### Does the power law beat uniform and exponential rehearsal?

Paired by seed (the same seed gives every condition the same initial weights and the same new-task data).
The verdict reads the 95% Student-t interval of the mean difference; with 3 seeds that interval is wide, so
"no difference resolved" means no difference larger than the interval was found, not that there is none.
Higher ACC and probe AUC are better, lower forgetting is better; "better"/"worse" says which way an interval
that excludes 0 points. The table holds 12 such intervals: about one of them may exclude 0 by chance alone.

{_comparison_table(main)}
### Both matchings side by side

Mean ± sd over seeds. ACC: final mean test accuracy over the 10 tasks; forgetting: mean drop from the best
earlier accuracy; rehearsal share: the old tasks' share of each phase's data (phases 2–10), from
`schedule_counts.csv`.

**Learning-speed probe** (`plugins.probe`, {probe_text}): at the start of every phase a copy of the network,
with a fresh optimizer of the run's kind (Adam, lr 1e-3), trains on batches of the new task alone; its test
accuracy on that task is scored along the way. *Probe AUC* is the area under that learning curve divided by
the budget (a mean accuracy over the budget): it rewards starting high and rising fast, is defined for every
phase, and does not rest on one noisy threshold crossing. The copy never touches the run (a run with the probe
has the same metrics.json as one without: tests/test_probe.py), and it removes the two things that confound
the run's own training curve: the new task's share of each batch (diluted by rehearsal) and the optimizer
state the schedule built up. *Facilitation*: the probe AUC of phases 2–10 minus that of phase 1, where the
copy starts from the initial weights (positive: earlier tasks make the new one faster to learn). Probe steps
to {PROBE_LEVEL:.0%}: the first scored step at or above it, read from the stored curves (phases that never
reach it left out).

{_matching_table(main)}
Probe AUC by phase (mean over seeds; phase 1 starts from the initial weights, identical across conditions):

{_probe_by_phase(main)}
### Where the budget binds: p_min = 0.01

The same comparison with the oldest task keeping 1% of its samples in the last phase instead of 10% (the
rehearsal share column gives the resulting budget); no rehearsal is the main section's (p_min does not change it).

{_tight(tight)}
### Every condition

Iters to 90%: training iterations of the run itself until the new task's running training accuracy first
reaches 90% (tasks 2–10, the facilitation plugin); new-task samples to 90%: how many samples of the new task it
saw by then; train acc @50 it: the new task's running training accuracy after 50 iterations. These are
measured inside the mixed batches, so rehearsal dilutes them; the probe above does not.

{_table(main, order)}
"""
    if any(name in main for name in ("ewc", "si", "powerlaw_ewc")):
        text += f"### The paper's claims, checked\n\n{_claims(main)}\n\"Comparable\" means within 0.5 points of ACC.\n\n"
        text += f"### Reference points\n\n{_reference(main)}\n"
    text += "## Split MNIST, class-incremental, 5 phases (the paper's v3 table)\n\n"
    text += _split(split, order) if split else "Not run in this regeneration (`--all` adds it).\n"
    text += "\n## Robustness (CPU scale, one factor at a time)\n\n"
    text += _sweeps(root / "sweeps") if (root / "sweeps").exists() else "Not run in this regeneration (`--all` adds it).\n"
    notes = path.parent / "powerlaw_notes.md"
    if notes.exists():  # the hand-written discussion of the measured numbers, kept beside the generated part
        text += "\n" + notes.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _shown(root: Path) -> Path:
    """The runs folder as the page names it: relative to the checkout when inside it."""
    repo = Path(__file__).resolve().parents[1]
    return root.relative_to(repo) if root.is_relative_to(repo) else root


def _run_dates(root: Path) -> str:
    # each run records when it finished (metrics.json `finished_utc`); a file's time would be the checkout's for
    # runs brought back from git (docs/results/runs/)
    stamps = [json.loads(m.read_text()).get("finished_utc") for m in root.rglob("metrics.json")]
    if not stamps:
        return "no runs yet"
    known = sorted(s for s in stamps if s)
    if not known:
        return "finish times not recorded (runs made before metrics.json had `finished_utc`)"
    first, last = (t.replace("T", " ")[:16] + " UTC" for t in (known[0], known[-1]))
    unknown = f" ({len(stamps) - len(known)} without a recorded time)" if len(known) < len(stamps) else ""
    return f"finished between {first} and {last}{unknown}"
