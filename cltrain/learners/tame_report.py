"""TAME's figures for metrics.json, computed once at the end of a run (reporting only: training is over).

The true tasks and boundaries (FinalContext) are used here and nowhere in cltrain/learners/tame.py: which expert
owns each task, routing / strict / lenient accuracies, parameter counts, and the detections scored against the
true boundaries (with a warning when the detector never fired).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cltrain.distributed import all_sum, ranks_agree
from cltrain.plugins.detection import never_fired, score_detections, true_shifts
from cltrain.plugins.pruning import count_params, weight_sparsity
from cltrain.streams.loader import eval_batches

if TYPE_CHECKING:
    from cltrain.learners.base import FinalContext
    from cltrain.learners.tame import TAME


def task_owners(tame: "TAME", ctx: "FinalContext") -> dict[int, int]:
    """The expert that was active for most of each true task's training batches."""
    order, ends = ctx.stream.order, ctx.phase_end_steps
    experts = np.asarray(tame.trace["expert"])
    votes: dict[int, np.ndarray] = {}
    for k, task in enumerate(order):
        seg = experts[(ends[k - 1] if k else 0):ends[k]]
        votes[task] = votes.get(task, 0) + np.bincount(seg, minlength=len(tame.experts))
    return {task: int(np.argmax(v)) for task, v in votes.items()}


@torch.no_grad()
def routed_accuracies(tame: "TAME", ctx: "FinalContext", owners: dict[int, int]) -> np.ndarray:
    """Per seen task: [routed class acc, strict (right expert and class), lenient (class within its task),
    routing (right expert)]. Each DDP rank scores its share of the test set; counts are summed."""
    stream, device = ctx.stream, ctx.device
    local = torch.zeros(stream.n_classes, dtype=torch.long, device=device)  # class -> index in its task
    for task in stream.tasks:
        local[task.classes] = torch.arange(len(task.classes), device=device)
    counts = torch.zeros(len(stream.tasks), 5, dtype=torch.float64, device=device)
    for task in stream.tasks:
        for x, y in eval_batches(stream, task.id, ctx.eval_batch_size, ctx.rank, ctx.world_size):
            preds, routes = tame.predict_routed(x)
            right_expert = routes == owners.get(task.id, -1)
            correct = preds == y
            counts[task.id] += torch.stack([correct.sum(), (correct & right_expert).sum(),
                                            (local[preds] == local[y]).sum(), right_expert.sum(),
                                            torch.tensor(len(y), device=device)]).double()
    counts = all_sum(counts).cpu().numpy()
    seen = sorted(set(stream.order))
    return counts[seen, :4] / counts[seen, 4:]


def final_metrics(tame: "TAME", ctx: "FinalContext") -> dict[str, Any]:
    tame.to(ctx.device)  # Lightning's teardown may have moved the module back to the CPU
    owners = task_owners(tame, ctx)
    acc = routed_accuracies(tame, ctx, owners)
    expert_tot = [count_params(e) for e in tame.experts]
    sel_tot = count_params(tame.selector) if tame.selector is not None else (0, 0)
    shifts = true_shifts(ctx.phase_end_steps, ctx.stream.order)
    events = [e["step"] for e in tame.events]
    det = score_detections(events, shifts, len(tame.trace["expert"]))
    warning = never_fired("TAME", events, shifts, ctx.phase_end_steps, tame.detector_cfg)
    return {
        "strict_acc": float(acc[:, 1].mean()), "lenient_acc": float(acc[:, 2].mean()),
        "routing_acc": float(acc[:, 3].mean()), "routed_class_acc": float(acc[:, 0].mean()),
        "per_task_strict_acc": acc[:, 1].tolist(), "per_task_routing_acc": acc[:, 3].tolist(),
        "n_experts": len(tame.experts), "n_true_tasks": len(set(ctx.stream.order)),
        "task_to_expert": {str(k): v for k, v in sorted(owners.items())},
        "total_params": sum(t for t, _ in expert_tot) + sel_tot[0],
        "nonzero_params": sum(nz for _, nz in expert_tot) + sel_tot[1],
        "expert_nonzero_params": [nz for _, nz in expert_tot], "selector_nonzero_params": sel_tot[1],
        "expert_weight_sparsity": [weight_sparsity(e) for e in tame.experts],
        "selector_weight_sparsity": weight_sparsity(tame.selector) if tame.selector is not None else None,
        "shift_events": tame.events, "prune_log": tame.prune_log,
        **{f"tame_{k}": v for k, v in det.items() if k != "true_shifts"}, "true_shifts": shifts,
        **ranks_agree_figures(tame, ctx), **({"warnings": [warning]} if warning else {}),
    }


def ranks_agree_figures(tame: "TAME", ctx: "FinalContext") -> dict[str, bool]:
    """DDP: did every rank take the same decisions, fill the same buffers and train the same experts?"""
    if ctx.world_size == 1:
        return {}
    mine = [tame.sel_buffer.digest(), tame.prune_buffer.digest(), float(tame.step), float(len(tame.events)),
            float(sum(e["step"] * (e["to"] + 1) for e in tame.events))]
    if tame._trained_digest is not None:  # None after resuming a finished stream
        mine.append(tame._trained_digest)
    return {"tame_ranks_agree": ranks_agree(mine, ctx.device, rtol=1e-9)}
