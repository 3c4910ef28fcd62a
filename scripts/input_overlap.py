"""How much the tasks of a permuted stream share their input units, with and without a blank border.

With pixels in [0, 1] an input that is 0 in every image of a task gets no gradient on that task, so the inputs
two tasks both use are where they interfere. For each `stream.pad`, over the first --images training images:
the inputs a task uses (non-zero in some image), the share of them that another task also uses (mean over
pairs), and the cosine similarity of two tasks' mean input maps (mean over pairs).

    CLTRAIN_DATA=../shared/data python scripts/input_overlap.py [--experiment baselines/pmnist] [--pads 0 2]
"""
from __future__ import annotations

import argparse
import itertools

import torch

import cltrain.streams  # noqa: F401  (registration)
from cltrain.config import load_config
from cltrain.streams.base import STREAMS


def overlap(experiment: str, pad: int, images: int, seed: int) -> tuple[int, int, float, float]:
    cfg = load_config(experiment, [f"stream.pad={pad}", f"seed={seed}", "stream.val_fraction=0"])
    stream = STREAMS.get(cfg.stream.name)(cfg)
    x = stream.train.images[:images]
    used, means = [], []
    for task in range(len(stream.tasks)):
        z = stream.transform.for_task(x, task).flatten(1)
        used.append((z > 0).any(0))
        means.append(z.mean(0))
    pairs = list(itertools.combinations(range(len(stream.tasks)), 2))
    shared = sum((used[a] & used[b]).sum().item() / used[a].sum().item() for a, b in pairs) / len(pairs)
    cosine = sum(torch.nn.functional.cosine_similarity(means[a], means[b], 0).item() for a, b in pairs) / len(pairs)
    return z.shape[1], int(used[0].sum()), shared, cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="baselines/pmnist")
    parser.add_argument("--pads", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'pad':>4s} {'inputs':>7s} {'used by task 0':>15s} {'shared with another task':>25s} "
          f"{'cosine of mean maps':>20s}")
    for pad in args.pads:
        inputs, used, shared, cosine = overlap(args.experiment, pad, args.images, args.seed)
        print(f"{pad:4d} {inputs:7d} {used:15d} {shared:25.3f} {cosine:20.3f}")


if __name__ == "__main__":
    main()
