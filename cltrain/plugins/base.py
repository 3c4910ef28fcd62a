"""Plugins: Lightning callbacks that add one capability (replay, detection, pruning, ...) to any learner.

Besides Lightning's hooks a plugin may implement the continual hooks below (task-aware streams only), keep
state that goes into the run's checkpoints, and report figures for metrics.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from pytorch_lightning import Callback

from cltrain.registry import Registry


@dataclass
class PluginContext:
    """What a plugin may know about the run when it is built."""

    seed: int
    batch_size: int
    run_dir: Optional[str] = None
    stream: Any = None  # the run's Stream (cltrain.streams.base), for plugins that draw their own data


class Plugin(Callback):
    Config: ClassVar[Optional[type]] = None
    name: ClassVar[str] = "plugin"
    presentations: ClassVar[tuple[str, ...]] = ("task_aware", "task_agnostic")  # stream.presentation values it supports
    # (config key, value) -> the learner trait that setting needs, e.g. {("source", "learner"): "reports_shifts"}
    learner_needs: ClassVar[dict[tuple[str, Any], str]] = {}

    def __init__(self, cfg: Any, ctx: PluginContext):
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx

    def on_task_start(self, learner, task_id: int) -> None:
        pass

    def on_task_end(self, learner, task_id: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def final_metrics(self, ctx) -> dict[str, Any]:
        """Figures for metrics.json at the end of the run; ctx is a learners.base.FinalContext. A "warnings"
        entry (a list of one-line strings) is printed at the end and kept in metrics.json's "warnings"."""
        return {}


# name -> Plugin subclass; enabled by a section `plugins.<name>` in the experiment config.
PLUGINS: Registry[type[Plugin]] = Registry("plugin", "plugins")
