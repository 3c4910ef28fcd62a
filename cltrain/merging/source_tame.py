"""TAME's experts as task vectors (learners/tame.py).

TAME builds expert j from its own initialisation, (seed, "model", j), rebuilt here exactly as the run built it:
vector j is expert j minus that initialisation, and the base the merged vector is added to is expert 0's
initialisation (the run's first network). The experts therefore do not share one base: adding their vectors
assumes the fine-tuning directions transfer between initialisations, which the merging papers never do (they
fine-tune one pre-trained model). Each true task's expert is metrics.json's `task_to_expert` (the expert active
for most of the task's training batches); pruned weights stay zero in the expert, so their vector entries are
minus the initialisation.
"""
from __future__ import annotations

import torch

from cltrain.merging.base import task_vector
from cltrain.merging.sources import SOURCES, Experts, RunView, Source, network_weights
from cltrain.report import read_record


@SOURCES.register("tame")
class TameExperts(Source):
    for_learners = ("tame",)
    needs_files = ("checkpoints/last.pt", "metrics.json")

    def load(self, run: RunView) -> Experts:
        learner = torch.load(run.path / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["learner"]
        owners = read_record(run.path / "metrics.json")["task_to_expert"]
        n_experts = 1 + max(int(k.split(".")[1]) for k in learner if k.startswith("experts."))
        inits = [run.build(j).state_dict() for j in range(n_experts)]
        experts = [network_weights(learner, f"experts.{j}.") for j in range(n_experts)]
        vectors = [task_vector({k: e[k] for k in init}, init) for e, init in zip(experts, inits)]
        return Experts(inits[0], vectors, {int(t): j for t, j in owners.items()})
