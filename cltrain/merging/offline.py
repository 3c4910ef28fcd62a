"""The work behind `cltrain merge`: a finished run's task vectors (from a source: merging/sources.py) -> one
merged model, scored on every task. lam, a density grid and AdaMerging's inputs use the stream's validation
split (rows never trained on), never the test set."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

import cltrain.nn  # noqa: F401  (registration)
import cltrain.streams  # noqa: F401
from cltrain import strict_json
from cltrain.config import OptimConfig, load_config
from cltrain.learners.base import Learner
from cltrain.learners.merge import validation_accuracy
from cltrain.merging.base import MERGERS, MergeData, apply, size_bytes
from cltrain.merging.sources import SOURCES, RunView
from cltrain.nn.registry import MODELS
from cltrain.seeding import seeded
from cltrain.streams.base import STREAMS, Stream
from cltrain.streams.loader import eval_batches, task_rows


def validation_rows(stream: Stream, task_id: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to n rows of a task's validation split: the rows the merge learner's `samples(..., split="val")` read."""
    idx = task_rows(stream.tasks[task_id], n, seed, "val")
    x, y = stream.train_batch(idx, torch.full_like(idx, task_id))
    return x, y, task_id


@torch.no_grad()
def test_accuracy(learner: Learner, stream: Stream, task_id: int, batch_size: int = 2000) -> float:
    right = total = 0
    for x, y in eval_batches(stream, task_id, batch_size):
        right += int((learner.predict(x, torch.full_like(y, task_id)) == y).sum())
        total += y.numel()
    return right / max(total, 1)


def evaluator(run_dir: Path) -> tuple[Learner, Stream, Any]:
    """A learner holding the run's network kind (weights to be loaded) and the run's stream."""
    cfg = load_config(str(run_dir / "config.yaml"))
    stream = STREAMS.get(cfg.stream.name)(cfg)
    return Learner(network_builder(cfg, stream)(0), OptimConfig(), None, stream.class_mask()).eval(), stream, cfg


def network_builder(cfg: Any, stream: Stream):
    """j -> the run's network j as the run initialised it (cltrain.seeding purpose "model", index j)."""
    def build(j: int) -> torch.nn.Module:
        with seeded(cfg.seed, "model", j):
            return MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)
    return build


def functional_logits(learner: Learner):
    """(weights, x, task ids) -> the learner's masked logits with those weights (differentiable in them)."""
    return lambda weights, x, t: learner.mask(functional_call(learner.model, weights, (x,)), t)


def merge_run(run_dir: Path, req: Any, options: Any) -> dict[str, Any]:
    learner, stream, cfg = evaluator(run_dir)
    experts = SOURCES.get(req.source)().load(RunView(run_dir, cfg, stream, network_builder(cfg, stream), req.base))
    base, vectors, owners = experts.base, experts.vectors, experts.owners
    started = time.perf_counter()
    val = [validation_rows(stream, t, req.val_per_task, cfg.seed) for t in sorted(owners)] if req.needs_val else []
    data = MergeData(base, functional_logits(learner), [(x, torch.full_like(y, t)) for x, y, t in val])  # no labels
    pick = choose(learner, req, options, cfg.seed, vectors, data, val)
    weights = apply(base, pick["merged"], pick["lam"])
    seconds = time.perf_counter() - started  # merging and the grid search, not the test evaluation below
    learner.model.load_state_dict(weights)
    acc = [test_accuracy(learner, stream, t.id) for t in stream.tasks]
    expert_acc = {}
    for t, i in owners.items():  # each task's expert on that task
        learner.model.load_state_dict(apply(base, vectors[i], 1.0))
        expert_acc[t] = test_accuracy(learner, stream, t)
    seen = sorted(owners)
    out = Path(req.out) if req.out else run_dir / "merged" / req.method
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / "model.pt")
    options = pick["options"]
    result = {
        "method": req.method, "source": req.source, "options": dataclasses.asdict(options) if options else {},
        "lam": pick["lam"], "val_acc": pick["val_acc"], "val_rows_per_task": [len(y) for _, y, _ in val],
        "tasks": [min((t for t, j in owners.items() if j == i), default=None) for i in range(len(vectors))],
        "task_to_vector": {str(t): i for t, i in sorted(owners.items())}, "acc_per_task": acc,
        "acc": sum(acc[t] for t in seen) / len(seen), "expert_acc": [expert_acc.get(t) for t in range(len(acc))],
        "normalised_acc": normalised(acc, expert_acc, seen), "out": str(out),
        "merge_time_s": seconds, "task_vector_bytes": size_bytes(vectors),
    }
    (out / "merge.json").write_text(strict_json.dumps(result, indent=2))
    return result


def normalised(acc: list[float], expert_acc: dict[int, float], seen: list[int]) -> float | None:
    """Mean over the seen tasks of merged / expert accuracy; null when an expert scores 0 on its task (a TAME
    expert whose task was learned over by another, say), where the ratio means nothing."""
    if any(expert_acc[t] == 0 for t in seen):
        return None
    return sum(acc[t] / expert_acc[t] for t in seen) / len(seen)


def choose(learner: Learner, req: Any, options: Any, seed: int, vectors: list, data: MergeData,
           val: list) -> dict[str, Any]:
    """The merged vector, lam and options: each density of `density_grid` (else the given options) with each
    lam of `lam_grid` (else the given lam; 1 for a method that learns its own scale), the pair with the best
    mean accuracy on the validation rows winning (ties: the first)."""
    grid = [dataclasses.replace(options, density=d) for d in req.density_grid] if req.density_grid else [options]
    best: dict[str, Any] = {}
    for opts in grid:
        merger = MERGERS.get(req.method)(opts, seed)
        merged = merger.combine(vectors, data)
        fixed = 1.0 if merger.learns_scale else req.lam
        for lam in ([fixed] if fixed is not None else req.lam_grid):
            score = None
            if val:  # read whenever something is chosen or learned (check_request made sure of it)
                learner.model.load_state_dict(apply(data.base, merged, lam))
                score = validation_accuracy(learner, val)
            if not best or (score is not None and score > best["val_acc"]):
                best = {"merged": merged, "lam": lam, "options": opts, "val_acc": score}
    return best
