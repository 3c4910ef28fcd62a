"""`cltrain ibcl-model RUN_DIR --preference 0.7,0.3`: a model for a new task trade-off from a finished IBCL run,
without training.

Reads the run's knowledge base (its last checkpoint), forms the barycenter of the preference, draws K models from
its 1 - alpha region, picks among them and the mean model on the validation split (training data, never the
test set), evaluates the pick on every task's test set, and writes it as an exported torch program (any batch size):

    model = torch.export.load("model.pt2").module()   # no cltrain needed
    logits = model(features)                           # features [B, 512] -> [B, 1]; label 1 where the logit is > 0
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from cltrain.errors import ConfigError


def parse_preference(text: str, n_tasks: int | None = None) -> list[float]:
    """'0.7,0.3' -> a point of the simplex over the run's seen tasks, or one line saying what is valid.

    n_tasks None checks everything but the length (before the run is loaded)."""
    count = f"{n_tasks} " if n_tasks is not None else ""
    valid = f"{count}comma-separated numbers >= 0 summing to 1 (one per task seen, in task-id order)"
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"bad value {text!r} for '--preference'; valid: {valid}") from None
    wrong_length = n_tasks is not None and len(values) != n_tasks
    if wrong_length or any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(f"bad value {text!r} for '--preference'; valid: {valid}")
    return values


def _check_options(args: argparse.Namespace) -> None:
    if not 0 < args.alpha < 1:
        raise ConfigError(f"bad value {args.alpha!r} for '--alpha'; valid: a number in (0, 1) (region level 1 - alpha)")
    if args.samples < 1:
        raise ConfigError(f"bad value {args.samples!r} for '--samples'; valid: an integer >= 1")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"bad value {args.seed!r} for '--seed'; valid: an integer in [0, 2^32)")
    out = Path(args.out) if args.out else None
    # the record goes beside the model as <name>.json, so a .json model would be overwritten by it
    if out is not None and (out.suffix != ".pt2" or not out.parent.is_dir() or out.is_dir()):
        raise ConfigError(f"bad value {args.out!r} for '--out'; valid: a file name ending in .pt2 in an existing "
                          "folder (its record is written beside it as .json)")


def cmd_ibcl_model(args: argparse.Namespace) -> int:
    import torch

    from cltrain.learners.ibcl_eval import TaskData, zero_shot
    from cltrain.learners.ibcl_export import as_module, load_run, save_program
    from cltrain.seeding import generator

    _check_options(args)
    parse_preference(args.preference)  # fail fast on the form; the length needs the run
    run_dir = Path(args.run_dir)
    cfg, stream, learner = load_run(run_dir)
    last = len(learner.kb.phase_tasks) - 1
    tasks = sorted(learner.kb.extremes_at(last))
    try:
        w = torch.tensor(parse_preference(args.preference, len(tasks)), dtype=torch.float64)
    except ConfigError as exc:  # say what the length comes from: a killed run has seen fewer tasks
        unfinished = "" if (run_dir / "metrics.json").exists() else "; the run has not finished"
        raise ConfigError(f"{exc} (its last checkpoint has seen tasks {tasks}{unfinished})") from None
    gen = generator(args.seed, "ibcl_region_samples", last)  # the same draws as the run's own evaluation
    shot = zero_shot(learner, TaskData(stream, cfg.trainer.eval_batch_size), last, tasks, w, args.alpha,
                     args.samples, gen)
    pick = shot.pick
    out = Path(args.out) if args.out else run_dir / ("ibcl_model_" + "_".join(f"{v:g}" for v in w.tolist()) + ".pt2")
    save_program(as_module(learner.model.dims, shot.thetas[pick].cpu()), learner.model.dims[0], out)
    report = {
        "preference": w.tolist(), "tasks": tasks, "alpha": args.alpha, "samples": args.samples,
        "picked": "mean model" if pick == 0 else f"sample {pick}",
        "val_acc": shot.val[pick].tolist(), "test_acc": shot.test[pick].tolist(),
        "weighted_val_acc": float(shot.val[pick] @ w), "weighted_test_acc": float(shot.test[pick] @ w),
        "mean_model_test_acc": shot.test[0].tolist(), "optimizer_steps": 0, "model": str(out),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(f"[cltrain] preference {w.tolist()} over tasks {tasks}: picked the {report['picked']} on validation; "
          f"test accuracy per task {[round(a, 4) for a in report['test_acc']]}, weighted "
          f"{report['weighted_test_acc']:.4f} -> {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ibcl-model", help="a model for a task preference from a finished IBCL run, no training",
                            description="e.g. cltrain ibcl-model runs/ibcl/mnist_pairs/... --preference 0.7,0.3,0,0,0")
    parser.add_argument("run_dir", help="the run folder of an IBCL run")
    parser.add_argument("--preference", required=True, help="weights over the seen tasks, e.g. 0.7,0.3 (sum 1)")
    parser.add_argument("--alpha", type=float, default=0.01, help="sample from the 1 - alpha region (default 0.01)")
    parser.add_argument("--samples", type=int, default=10, help="models drawn from the region (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--out", help="model file (default RUN_DIR/ibcl_model_<preference>.pt2); a .json beside it")
    parser.set_defaults(func=cmd_ibcl_model)
