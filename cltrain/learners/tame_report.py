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


def pruned_tasks(ctx: "FinalContext", entry: dict[str, Any], owners: dict[int, int]) -> list[int]:
    """The true tasks an expert had trained on when it was pruned: those it owns whose phase started before the
    pruning step (a late detection prunes after a few batches of the next task; a missed shift leaves one
    expert owning two tasks)."""
    starts = [0, *ctx.phase_end_steps[:-1]]
    return [task for k, task in enumerate(ctx.stream.order)
            if owners.get(task) == entry["expert"] and starts[k] < max(entry["step"], 1)]


@torch.no_grad()
def expert_accuracy(tame: "TAME", ctx: "FinalContext", state: dict[str, torch.Tensor], task_id: int) -> float:
    """Test accuracy on one task of an expert's saved weights alone (no routing: the expert is told)."""
    expert = tame.model_factory().to(ctx.device)
    expert.load_state_dict(state)
    expert.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for x, y in eval_batches(ctx.stream, task_id, ctx.eval_batch_size, ctx.rank, ctx.world_size):
        counts += torch.stack([(expert(x).argmax(1) == y).sum(), torch.tensor(len(y), device=ctx.device)]).double()
    counts = all_sum(counts)
    return float(counts[0] / counts[1])


def pruning_figures(tame: "TAME", ctx: "FinalContext", owners: dict[int, int], routed: np.ndarray) -> dict[str, Any]:
    """Each task's accuracy before and right after its expert's (last) pruning, with the expert alone, then at
    the end (expert alone and routed): pruning loss, forgetting after pruning, and routing loss, separately.

    Forgetting after pruning averages over the tasks other than the last phase's (whose expert is pruned when
    the stream ends; the framework's `forgetting` leaves out the last task the same way); it is measured on the
    routed accuracy that ACC reports, so it holds routing errors and any later change of the expert.
    """
    seen = sorted(set(ctx.stream.order))
    last = {}
    for entry, snap in zip(tame.prune_log, tame.prune_snapshots):
        for task in pruned_tasks(ctx, entry, owners):
            last[task] = (entry, snap)
    if not all(task in last for task in seen):
        return {}  # pruning off (or a task's expert never pruned): nothing to separate
    final_state = {task: tame.experts[owners[task]].state_dict() for task in seen}
    rows = {task: [expert_accuracy(tame, ctx, last[task][1][key], task) for key in ("dense", "pruned")]
            + [expert_accuracy(tame, ctx, final_state[task], task)] for task in seen}
    before, after, final_expert = (np.array([rows[t][i] for t in seen]) for i in range(3))
    earlier = [i for i, t in enumerate(seen) if t != ctx.stream.order[-1]]
    return {
        "per_task_acc_before_prune": before.tolist(), "per_task_acc_after_prune": after.tolist(),
        "per_task_final_expert_acc": final_expert.tolist(),
        "pruning_loss": float(np.mean(before - after)),
        "forgetting_after_pruning": float(np.mean(after[earlier] - routed[earlier])) if earlier else 0.0,
        "expert_drift_after_pruning": float(np.mean(after - final_expert)),
        "routing_loss": float(np.mean(final_expert - routed)),
    }


def final_metrics(tame: "TAME", ctx: "FinalContext") -> dict[str, Any]:
    tame.to(ctx.device)  # Lightning's teardown may have moved the module back to the CPU
    owners = task_owners(tame, ctx)
    acc = routed_accuracies(tame, ctx, owners)
    expert_tot = [count_params(e) for e in tame.experts]
    sel_tot = count_params(tame.selector) if tame.selector is not None else (0, 0)
    shifts = true_shifts(ctx.shift_steps(), ctx.stream.order)
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
        **pruning_figures(tame, ctx, owners, acc[:, 0]),
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
