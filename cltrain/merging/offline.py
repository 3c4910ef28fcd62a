"""The work behind `cltrain merge`: a finished run's task vectors -> one merged model, scored on every task."""
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
from cltrain.errors import ConfigError
from cltrain.learners.base import Learner
from cltrain.learners.merge import validation_accuracy
from cltrain.merging.base import MERGERS, MergeData, apply, size_bytes
from cltrain.nn.registry import MODELS
from cltrain.seeding import generator
from cltrain.streams.base import STREAMS, Stream
from cltrain.streams.loader import eval_batches


def load_experts(run_dir: Path) -> dict[str, Any]:
    """The merge learner's state from checkpoints/last.pt: base weights, task vectors, their task ids."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    extra = state["learner"].get("_extra_state")
    if not extra or not extra.get("vectors"):
        method = extra.get("method") if extra else None
        raise ConfigError(f"{run_dir}'s checkpoint holds no task vectors (learner.method={method!r} keeps only "
                          f"its merged state); valid: a run of an offline method, e.g. learner.method=average")
    return extra


def validation_samples(stream: Stream, task_id: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The trainer's `samples` hook's pick: n seeded training samples of a task (purpose "task_samples")."""
    task = stream.tasks[task_id]
    pick = torch.randperm(task.n_train, generator=generator(seed, "task_samples", task_id))[:n]
    idx = task.train_idx[pick.to(task.train_idx.device)]
    ids = torch.full_like(idx, task_id)
    return stream.transform(stream.train.images[idx], ids), stream.train.labels[idx], task_id


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
    model = MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)
    return Learner(model, OptimConfig(), None, stream.class_mask()).eval(), stream, cfg


def functional_logits(learner: Learner):
    """(weights, x, task ids) -> the learner's masked logits with those weights (differentiable in them)."""
    return lambda weights, x, t: learner.mask(functional_call(learner.model, weights, (x,)), t)


def merge_run(run_dir: Path, req: Any, options: Any) -> dict[str, Any]:
    extra = load_experts(run_dir)
    learner, stream, cfg = evaluator(run_dir)
    base, vectors, tasks = extra["base"], extra["vectors"], extra["tasks"]
    merger = MERGERS.get(req.method)(options, cfg.seed)
    started = time.perf_counter()
    val = [validation_samples(stream, t, req.val_per_task, cfg.seed) for t in sorted(set(tasks))]
    unlabelled = [(x, torch.full_like(y, t)) for x, y, t in val]  # AdaMerging's inputs: labels left out
    merged = merger.combine(vectors, MergeData(base, functional_logits(learner), unlabelled))
    lam, val_acc = (1.0 if merger.learns_scale else req.lam), None
    if lam is None:
        scores = []
        for candidate in req.lam_grid:
            learner.model.load_state_dict(apply(base, merged, candidate))
            scores.append(validation_accuracy(learner, val))
        best = int(torch.tensor(scores).argmax())
        lam, val_acc = req.lam_grid[best], scores[best]
    weights = apply(base, merged, lam)
    seconds = time.perf_counter() - started  # merging and choosing lam, not the test evaluation below
    learner.model.load_state_dict(weights)
    acc = [test_accuracy(learner, stream, t.id) for t in stream.tasks]
    experts = {}
    for t, tau in zip(tasks, vectors):  # each expert on its own task (the last one, if a task recurs)
        learner.model.load_state_dict(apply(base, tau, 1.0))
        experts[t] = test_accuracy(learner, stream, t)
    seen = sorted(experts)
    out = Path(req.out) if req.out else run_dir / "merged" / req.method
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / "model.pt")
    result = {
        "method": req.method, "options": dataclasses.asdict(options) if options is not None else {},
        "lam": lam, "val_acc": val_acc, "tasks": tasks, "acc_per_task": acc,
        "acc": sum(acc[t] for t in seen) / len(seen), "expert_acc": [experts.get(t) for t in range(len(acc))],
        "normalised_acc": sum(acc[t] / experts[t] for t in seen) / len(seen), "out": str(out),
        "merge_time_s": seconds, "task_vector_bytes": size_bytes(vectors),
    }
    (out / "merge.json").write_text(strict_json.dumps(result, indent=2))
    return result
