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

import torch
from torch import nn

from cltrain.errors import ConfigError


def parse_preference(text: str, n_tasks: int | None = None) -> torch.Tensor:
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
    return torch.tensor(values, dtype=torch.float64)


def _check_options(args: argparse.Namespace) -> None:
    if not 0 < args.alpha < 1:
        raise ConfigError(f"bad value {args.alpha!r} for '--alpha'; valid: a number in (0, 1) (region level 1 - alpha)")
    if args.samples < 1:
        raise ConfigError(f"bad value {args.samples!r} for '--samples'; valid: an integer >= 1")


def load_run(run_dir: Path):
    """The run's config, stream and IBCL learner with the knowledge base of its last checkpoint."""
    from omegaconf import OmegaConf

    from cltrain.config import ExperimentConfig, merge_checked
    from cltrain.experiment import resolve_components
    from cltrain.nn.registry import MODELS
    from cltrain.run import RunFolder
    from cltrain.streams.base import STREAMS

    run = RunFolder(run_dir)
    if not (run_dir / "config.yaml").is_file() or not run.last_checkpoint.is_file():
        raise ConfigError(f"{run_dir} is not a run folder with a checkpoint (config.yaml, checkpoints/last.pt); "
                          f"valid: the run_dir of an IBCL run")
    cfg: ExperimentConfig = OmegaConf.to_object(merge_checked(ExperimentConfig, OmegaConf.load(run_dir / "config.yaml")))
    if cfg.learner.get("name") != "ibcl":
        raise ConfigError(f"{run_dir} is a {cfg.learner.get('name')!r} run; valid: the run_dir of an IBCL run")
    parts = resolve_components(cfg)
    stream = STREAMS.get(cfg.stream.name)(cfg)
    model = MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)
    learner = parts.learner_cls(model, cfg.optim, parts.method_cfg)
    learner.load_state_dict(run.load_checkpoint()["learner"])
    if not learner.kb.phase_tasks:
        raise ConfigError(f"{run_dir} has not finished a task yet; valid: a run with at least one finished phase")
    return cfg, stream, learner


def as_module(dims: list[int], theta: torch.Tensor) -> nn.Sequential:
    """A plain torch MLP holding one weight vector of the Bayesian head."""
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(_unflatten(dims, theta)):
        linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(w)
            linear.bias.copy_(b)
        layers += [linear] + ([nn.ReLU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers).eval()


def save_program(module: nn.Module, n_in: int, out: Path) -> None:
    example = (torch.zeros(2, n_in),)
    program = torch.export.export(module, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(out))


def _unflatten(dims: list[int], theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, at = [], 0
    for n_in, n_out in zip(dims[:-1], dims[1:]):
        w = theta[at:at + n_in * n_out].reshape(n_out, n_in)
        at += n_in * n_out
        out.append((w, theta[at:at + n_out]))
        at += n_out
    return out


def cmd_ibcl_model(args: argparse.Namespace) -> int:
    from cltrain.learners.ibcl_eval import TaskData, zero_shot

    _check_options(args)
    parse_preference(args.preference)  # fail fast on the form; the length needs the run
    run_dir = Path(args.run_dir)
    cfg, stream, learner = load_run(run_dir)
    last = len(learner.kb.phase_tasks) - 1
    tasks = sorted(learner.kb.extremes_at(last))
    w = parse_preference(args.preference, len(tasks))
    gen = torch.Generator().manual_seed(args.seed)
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
