"""The merge learner's own experts: its checkpoint keeps the base and every task vector (offline methods)."""
from __future__ import annotations

import torch

from cltrain.errors import ConfigError
from cltrain.merging.sources import SOURCES, Experts, RunView, Source


@SOURCES.register("merge")
class MergeLearnerVectors(Source):
    for_learners = ("merge",)

    def load(self, run: RunView) -> Experts:
        state = torch.load(run.path / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
        extra = state["learner"].get("_extra_state")
        if not extra or not extra.get("vectors"):
            method = extra.get("method") if extra else None
            raise ConfigError(f"{run.path}'s checkpoint holds no task vectors (learner.method={method!r} keeps only "
                              f"its merged state); valid: a run of an offline method, e.g. learner.method=average, "
                              f"or one with trainer.keep_phase_weights=true and source=phases")
        # a recurring task's expert is its last one
        return Experts(extra["base"], extra["vectors"], {t: i for i, t in enumerate(extra["tasks"])})
