"""Model merging: task vectors from a shared base combined into one model, one method per file (MERGERS)."""
from cltrain.merging import (  # noqa: F401  (registration)
    adamerging, average, breadcrumbs, dare, pcb, running, source_merge, source_phases, source_tame, task_arithmetic,
    ties)
from cltrain.merging.base import MERGERS, Merger, apply, task_vector

__all__ = ["MERGERS", "Merger", "apply", "task_vector"]
