"""EWC's Fisher estimated three ways on a finished offline-EWC run, task by task, on the network as it stood at the
end of each task (the anchors the run stored): cltrain's default (the true label, `learner.fisher_samples`
images), the true label on every training image of the task, and the model's arg-max prediction on every image
(van de Ven & Tolias's code). The first is checked against the Fisher the run stored.

    CLTRAIN_DATA=../shared/data python scripts/fisher_labels.py runs/baselines/padded/pmnist_5000_check/ewc_500.0_s0

Prints, per task: the network's training accuracy on the task (the samples where the two kinds of label agree),
the total Fisher (sum over all weights) each way, and the ratio predicted / true on every image. A ratio below 1
means the authors' estimate makes the same lambda a weaker penalty. `--tail TASK` also prints how the true-label
Fisher of that task is spread over its samples (each sample's squared-gradient total; Linear layers only) and
what estimates from random subsets of `fisher_samples` images scatter over.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cltrain.learners.ewc import diagonal_fisher  # noqa: E402
from cltrain.merging.offline import evaluator  # noqa: E402
from cltrain.streams.loader import Batch, task_rows  # noqa: E402

ALL = 1 << 30  # more rows than any task has: task_rows then returns all of them


def reader(stream, task: int, seed: int):
    """The `samples` hook the trainer hands EWC, for one task: the same seeded rows (cltrain.streams.loader)."""
    def samples(batch_size: int, n: int, split: str = "train"):
        idx = task_rows(stream.tasks[task], n, seed, split)
        for start in range(0, idx.numel(), batch_size):
            rows = idx[start:start + batch_size]
            t = torch.full_like(rows, task)
            x, y = stream.train_batch(rows, t)
            yield Batch(x, y, t, rows.numel())
    return samples


def train_accuracy(learner, samples) -> float:
    right = total = 0
    with torch.no_grad():
        for batch in samples(2048, ALL):
            right += int((learner.predict(batch.x, batch.t) == batch.y).sum())
            total += len(batch)
    return right / total


def total(fisher: dict[str, torch.Tensor]) -> float:
    return sum(float(f.sum()) for f in fisher.values())


def per_sample_mass(learner, samples) -> torch.Tensor:
    """Each sample's total squared gradient of the true label's log-likelihood (the Fisher's summand, summed over
    weights): for a Linear layer, |d_i|^2 (|a_i|^2 + 1) with d_i the gradient at its output, a_i its input."""
    layers = [m for m in learner.model.modules() if isinstance(m, torch.nn.Linear)]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda _m, inp, out, j=j: seen.__setitem__(j, (inp[0].detach(), out)))
             for j, m in enumerate(layers)]
    masses = []
    try:
        for batch in samples(1024, ALL):
            with torch.enable_grad():
                loss = F.cross_entropy(learner.logits(batch.x, batch.t), batch.y, reduction="sum")
                grads = torch.autograd.grad(loss, [seen[j][1] for j in range(len(layers))])
            masses.append(sum(g.pow(2).sum(1) * (seen[j][0].pow(2).sum(1) + 1) for j, g in enumerate(grads)))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(masses)


def print_tail(learner, samples, n: int, task: int) -> None:
    mass = per_sample_mass(learner, samples)
    top = mass.sort(descending=True).values[: mass.numel() // 100].sum() / mass.sum()
    gen = torch.Generator().manual_seed(0)
    subsets = torch.stack([mass[torch.randperm(mass.numel(), generator=gen)[:n]].mean() for _ in range(2000)])
    print(f"task {task}, true-label Fisher per sample (total over weights), {mass.numel()} images: mean "
          f"{mass.mean():.4g}, median {mass.median():.4g}, max {mass.max():.4g}; the top 1 % of images carry "
          f"{100 * top:.0f} % of it. Means of 2000 random {n}-image subsets: median {subsets.median():.4g}, "
          f"10th-90th percentile {subsets.quantile(0.1):.4g}-{subsets.quantile(0.9):.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run with learner.name=ewc, learner.mode=offline")
    parser.add_argument("--tasks", type=int, nargs="*", default=None,
                        help="task ids (default: every task; none: only --tail)")
    parser.add_argument("--tail", type=int, default=None, metavar="TASK", help="also: how that task's Fisher is "
                        "spread over its images, and the scatter of estimates from fisher_samples images")
    args = parser.parse_args()
    learner, stream, cfg = evaluator(args.run_dir)
    if cfg.learner.get("name") != "ewc" or cfg.learner.get("mode") != "offline":
        parser.error(f"{args.run_dir}: not an offline-EWC run (learner {dict(cfg.learner)}); its anchors are needed")
    state = torch.load(args.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["learner"]
    fishers, anchors = state["_extra_state"]["fishers"], state["_extra_state"]["anchors"]
    n, labels = int(cfg.learner["fisher_samples"]), str(cfg.learner.get("fisher_labels", "true"))
    tasks = args.tasks if args.tasks is not None else list(range(len(anchors)))
    if any(not 0 <= t < len(anchors) for t in [*tasks, *([args.tail] if args.tail is not None else [])]):
        parser.error(f"--tasks/--tail: task ids in 0..{len(anchors) - 1} (the run's finished tasks)")
    print(f"{'task':>4s} {'train acc':>9s} {f'{labels}, {n} (stored)':>20s} {f'{labels}, {n}':>12s} "
          f"{'true, all':>12s} "
          f"{'predicted, all':>15s} {'predicted/true':>15s}")
    for task in tasks:
        learner.model.load_state_dict(anchors[task])
        samples = reader(stream, task, cfg.seed)
        ours = diagonal_fisher(learner, samples, n, int(cfg.learner["fisher_chunk"]), labels)
        true_all = diagonal_fisher(learner, samples, ALL, 64)
        predicted_all = diagonal_fisher(learner, samples, ALL, 64, "predicted")
        print(f"{task:4d} {train_accuracy(learner, samples):9.4f} {total(fishers[task]):20.5g} {total(ours):12.5g} "
              f"{total(true_all):12.5g} {total(predicted_all):15.5g} {total(predicted_all) / total(true_all):15.3f}",
              flush=True)
    if args.tail is not None:
        learner.model.load_state_dict(anchors[args.tail])
        print_tail(learner, reader(stream, args.tail, cfg.seed), n, args.tail)


if __name__ == "__main__":
    main()
