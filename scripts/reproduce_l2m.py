"""Reproduce the L2M comparison on a Continual-World sequence at CPU scale and regenerate docs/results/l2m.md.

    python scripts/reproduce_l2m.py                    # pre-train once, then 7 methods, 1 seed (~1 h on 2 busy cores)
    python scripts/reproduce_l2m.py --seeds 3 --jobs 2 # the issue's 3 seeds, two runs at a time
    python scripts/reproduce_l2m.py --report-only

Runs land in runs/l2m/pretrain (the pre-trained decision transformer every other run loads) and
runs/l2m/<method>/seed<k>. A finished run is skipped, a killed one resumed, so the script can be stopped and
restarted. After each fine-tuning run its final model is also rolled out on the pre-training tasks
(pretrain_retention.json in the run folder): do the pre-training skills survive?
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = {  # name in the doc -> experiment under experiments/l2m/
    "fine-tuning": "finetune", "EWC": "ewc", "single LoRA": "lora", "L2P": "l2p", "L2M": "l2m",
    "L2M-oracle": "l2m_oracle", "multi-task": "multitask",
}
QUIET = ["trainer.progress_bar=false", "logger.wandb.mode=disabled"]


def fit(experiment: str, run_dir: Path, overrides: list[str]) -> int:
    """`cltrain fit` in a subprocess (one process per run keeps runs independent); resumes a killed run."""
    if (run_dir / "metrics.json").exists():
        return 0
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cltrain.cli", "fit", experiment, f"run_dir={run_dir}",
           f"resume={str(resume).lower()}", *QUIET, *overrides]
    with open(run_dir.parent / f"{run_dir.name}.log", "a") as log:
        return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode


def retention(run_dir: Path, experiment: str, overrides: list[str], n_pretrain: int) -> list[float]:
    """Success of a run's final model on the pre-training tasks (no task ids: they are not CW tasks)."""
    out = run_dir / "pretrain_retention.json"
    if out.exists():
        return json.loads(out.read_text())
    import torch

    from cltrain.config import load_config
    from cltrain.experiment import resolve_components
    from cltrain.nn.registry import MODELS
    from cltrain.streams.metaworld import metaworld_stream, rollout_success

    cfg = load_config(experiment, [*overrides, *QUIET, "stream.options.tasks=pretrain", f"stream.n_tasks={n_pretrain}"])
    parts = resolve_components(cfg)
    stream = metaworld_stream(cfg)
    stream.presentation = "task_agnostic"
    model = MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)
    learner = parts.learner_cls(model, cfg.optim, parts.method_cfg, None, None)
    learner.load_state_dict(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["learner"])
    scores = rollout_success(stream, learner, 0, 0, 1, cfg.seed)
    out.write_text(json.dumps(scores))
    return scores


def run_method(name: str, seed: int, root: Path, extra: list[str], n_pretrain: int) -> str:
    experiment, run_dir = f"l2m/{METHODS[name]}", root / METHODS[name] / f"seed{seed}"
    overrides = [f"seed={seed}", f"model.options.pretrained={root / 'pretrain' / 'checkpoints' / 'last.pt'}", *extra]
    start = time.perf_counter()
    rc = fit(experiment, run_dir, overrides)
    if rc != 0:
        return f"{name} seed {seed}: failed (exit {rc}, log {run_dir}.log)"
    retention(run_dir, experiment, overrides, n_pretrain)
    return f"{name} seed {seed}: done in {time.perf_counter() - start:.0f} s"


def mean_sd(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def ordering(means: dict[str, float], kept: dict[str, float], pre: float) -> str:
    """Our ranking by final mean success, and each of the paper's claims checked against our numbers."""
    if not means:
        return "No runs yet."
    ranked = " > ".join(f"{n} ({v:.2f})" for n, v in sorted(means.items(), key=lambda kv: -kv[1]))
    lines = [f"- Ours, by mean final success: {ranked}."]
    claims = [("L2M above L2P", "L2M", "L2P"), ("L2M above fine-tuning", "L2M", "fine-tuning"),
              ("L2M above EWC", "L2M", "EWC"), ("L2M above single LoRA", "L2M", "single LoRA")]
    for text, a, b in claims:
        if a in means and b in means:
            verdict = "holds" if means[a] > means[b] else ("tie" if means[a] == means[b] else "does not hold")
            lines.append(f"- Paper: {text}. Ours: {means[a]:.2f} vs {means[b]:.2f}, {verdict}.")
    if "L2M" in means and "multi-task" in means:
        lines.append(f"- Paper: L2M close to multi-task. Ours: {means['L2M']:.2f} vs {means['multi-task']:.2f}.")
    if "L2M" in kept and "fine-tuning" in kept:
        lines.append(f"- Paper: pre-training skills kept by L2M. Ours on the pre-training tasks: L2M {kept['L2M']:.2f}, "
                     f"fine-tuning {kept['fine-tuning']:.2f}, the pre-trained model {pre:.2f}.")
    return "\n".join(lines)


def write_doc(path: Path, root: Path, seeds: int) -> None:
    pre = json.loads((root / "pretrain" / "metrics.json").read_text())
    pre_cfg = (root / "pretrain" / "config.yaml").read_text()
    rows, names, means, kept = [], None, {}, {}
    for name, exp in METHODS.items():
        runs = [root / exp / f"seed{s}" for s in range(seeds) if (root / exp / f"seed{s}" / "metrics.json").exists()]
        if not runs:
            rows.append(f"| {name} | not run |")
            continue
        ms = [json.loads((r / "metrics.json").read_text()) for r in runs]
        last = np.array([m["acc_matrix"][-1] for m in ms])
        forget = [-m["bwt"] for m in ms]
        ret = [np.mean(json.loads((r / "pretrain_retention.json").read_text())) for r in runs
               if (r / "pretrain_retention.json").exists()]
        means[name] = float(last.mean())
        kept[name] = float(np.mean(ret)) if ret else float("nan")
        per_task = " | ".join(mean_sd(last[:, j]) for j in range(last.shape[1]))
        rows.append(f"| {name} | {per_task} | **{mean_sd(last.mean(1))}** | {mean_sd(forget)} | "
                    f"{mean_sd(ret) if ret else 'n/a'} | {np.mean([m['wall_time_s'] for m in ms]):.0f} | {len(ms)} |")
        names = names or json.loads((runs[0] / "metrics.json").read_text()).get("task_names")
    cw = json.loads((root / "finetune" / "seed0" / "metrics.json").read_text()) if (root / "finetune" / "seed0" / "metrics.json").exists() else None
    n_tasks = cw["n_tasks"] if cw else 0
    from cltrain.streams.metaworld import CW10, PRETRAIN

    header = " | ".join(CW10[:n_tasks])
    text = f"""# L2M on Continual World: the paper vs our CPU-scale runs

Paper: Schmied et al., "Learning to Modulate pre-trained Models in RL", NeurIPS 2023 (arXiv 2306.14884).
Regenerate this page: `python scripts/reproduce_l2m.py` (add `--seeds 3` for three seeds).

## What the paper reports
A multi-domain decision transformer (6 layers, width 768) pre-trained on 40 Meta-World + 10 DMControl tasks,
fine-tuned on CW10 (100k steps per task, batch 256). Ordering of final mean success on CW10: L2M above L2P,
single LoRA/adapters, EWC/L2 and fine-tuning, close to the multi-task upper bound, with the pre-training tasks'
performance kept (the pre-trained weights are never changed).

## Our cuts (CPU scale, 2 shared cores)
- Backbone: decision transformer width 64, 3 layers, 4 heads, context 5 timesteps, 64 action bins per
  dimension, actions decoded one dimension at a time (cltrain/nn/dt.py). No timestep embedding, no reward token.
- Pre-training: {pre['n_tasks']} Meta-World tasks outside CW10 ({', '.join(PRETRAIN[:pre['n_tasks']])}),
  multi-task (joint schedule), settings in runs/l2m/pretrain/config.yaml; its success on them at the end:
  {', '.join(f'{v:.2f}' for v in pre['acc_matrix'][-1])} (mean {np.mean(pre['acc_matrix'][-1]):.2f}).
- Sequence: the first {n_tasks} CW10 tasks in the paper's order ({', '.join(CW10[:n_tasks])}), not 10.
- Data: 20 scripted-policy episodes per task (200 steps, action noise sd 0, 0.1, 0.3, 0.6 in turn) instead of
  a replay buffer of a trained SAC agent; training steps per task as in experiments/l2m/cw.yaml (not 100k),
  batch 64, Adam lr 1e-3 for every method.
- Evaluation: 4 seeded greedy episodes per task after every phase (the paper: stochastic episodes, more of them).
- Seeds: {seeds} (the issue asks for 3).

## Results: success at the end of the sequence
Success per task after the last phase, their mean, forgetting (success right after a task's own phase minus
at the end, averaged over all but the last task), and the mean success of the final model on the
pre-training tasks (no task ids given) beside the pre-trained model's own {np.mean(pre['acc_matrix'][-1]):.2f}.

| method | {header} | mean | forgetting | pre-training tasks | wall s | seeds |
|---|{'---|' * n_tasks}---|---|---|---|---|
{chr(10).join(rows)}

## Ours beside the paper's ordering
{ordering(means, kept, float(np.mean(pre['acc_matrix'][-1])))}

With 4 episodes per task and {n_tasks} tasks, one episode moves a task's success by 0.25 and the mean by
{0.25 / max(n_tasks, 1):.2f}: differences of that size are noise.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "l2m.md"))
    parser.add_argument("overrides", nargs="*", help="key=value for every fine-tuning run (e.g. stream.n_tasks=2)")
    args = parser.parse_args()
    root = REPO / "runs" / "l2m"
    from cltrain.config import load_config

    n_pretrain = load_config("l2m/pretrain").stream.n_tasks
    if not args.report_only:
        if fit("l2m/pretrain", root / "pretrain", []) != 0:
            print(f"reproduce_l2m: error: pre-training failed (log {root / 'pretrain.log'})", file=sys.stderr)
            return 1
        methods = [m.strip() for m in args.methods.split(",")]
        unknown = set(methods) - set(METHODS)
        if unknown:
            print(f"reproduce_l2m: error: unknown methods {sorted(unknown)}; valid: {', '.join(METHODS)}", file=sys.stderr)
            return 2
        with ThreadPoolExecutor(args.jobs) as pool:
            jobs = [pool.submit(run_method, m, s, root, args.overrides, n_pretrain) for s in range(args.seeds) for m in methods]
            for job in jobs:
                print(job.result(), flush=True)
    write_doc(Path(args.out), root, args.seeds)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
