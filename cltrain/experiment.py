"""Config -> components -> ContinualTrainer: the Python API behind `cltrain fit`.

    from cltrain.config import load_config
    from cltrain.experiment import run_experiment
    metrics = run_experiment(load_config("bench/pmnist_naive", ["stream.n_tasks=3"]))
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only

import cltrain.learners  # noqa: F401  (registration)
import cltrain.nn  # noqa: F401
import cltrain.plugins  # noqa: F401
import cltrain.streams  # noqa: F401
from cltrain.config import ExperimentConfig, component_config
from cltrain.distributed import SELF_SYNC_STRATEGIES
from cltrain.errors import ConfigError
from cltrain.learners.base import LEARNERS, Learner
from cltrain.nn.registry import MODELS
from cltrain.plots import schedule_png
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext
from cltrain.run import RunFolder, default_run_dir
from cltrain.streams.base import STREAMS, Stream
from cltrain.streams.datasets import DATASETS
from cltrain.streams.schedules import SCHEDULES
from cltrain.trainer import ContinualTrainer

RUN_DIR_ENV = "CLTRAIN_RUN_DIR"  # shared with DDP worker processes, which re-run the same command line


@dataclass
class Components:
    """The validated choices of an experiment, before any data is loaded."""

    learner_cls: type[Learner]
    method_cfg: Any
    plugin_cfgs: dict[str, tuple[type[Plugin], Any]]
    schedule: str


def resolve_components(cfg: ExperimentConfig) -> Components:
    """Check every registry name and component section; fail before touching data or disk."""
    learner_cls = LEARNERS.get(str(cfg.learner.get("name", "finetune")))
    method_cfg = component_config(cfg.learner, learner_cls.Config, "learner")
    if hasattr(learner_cls, "check"):  # a method's checks that span sections (model, stream, optim)
        learner_cls.check(cfg)
    plugin_cfgs = {}
    for name, section in cfg.plugins.items():
        plugin_cls = PLUGINS.get(name)
        plugin_cfgs[name] = (plugin_cls, component_config(section or {}, plugin_cls.Config, f"plugins.{name}"))
    schedule = cfg.stream.schedule
    SCHEDULES.get(schedule)
    if learner_cls.schedule is not None:
        if schedule not in ("none", learner_cls.schedule):
            raise ConfigError(f"learner.name={cfg.learner['name']!r} trains in the {learner_cls.schedule!r} "
                              f"environment; stream.schedule={schedule!r} conflicts (valid: none, {learner_cls.schedule})")
        schedule = learner_cls.schedule
    stream_family = STREAMS.get(cfg.stream.name)
    DATASETS.get(cfg.stream.dataset)
    # Components with their own options (`stream.options`, `model.options`) check them here, before any run
    # folder exists; components without a `check` take no options.
    _check_options(stream_family, cfg, cfg.stream.options, "stream.options")
    _check_options(MODELS.get(cfg.model.name), cfg.model, cfg.model.options, "model.options")
    t = cfg.trainer
    if t.several_processes and learner_cls.syncs_own_gradients and t.strategy not in SELF_SYNC_STRATEGIES:
        raise ConfigError(f"learner.name={cfg.learner['name']!r} syncs its own gradients and runs several "
                          f"processes only with plain DDP; trainer.strategy={t.strategy!r} "
                          f"(valid: {', '.join(SELF_SYNC_STRATEGIES)})")
    MODELS.get(cfg.model.name)
    return Components(learner_cls, method_cfg, plugin_cfgs, schedule)


def _check_options(component: Any, cfg: Any, options: dict, where: str) -> None:
    check = getattr(component, "check", None)
    if check is not None:
        check(cfg)
    elif options:
        raise ConfigError(f"'{where}' is not understood by this component; got: {', '.join(map(str, options))}")


def resolved_config(cfg: ExperimentConfig, parts: Components, run_dir: str) -> ExperimentConfig:
    """The config as run: defaults of the method and plugins filled in, the run folder fixed."""
    learner = {"name": cfg.learner.get("name", "finetune"), **_fields(parts.method_cfg)}
    plugins = {name: _fields(pcfg) for name, (_, pcfg) in parts.plugin_cfgs.items()}
    stream = dataclasses.replace(cfg.stream, schedule=parts.schedule)
    return dataclasses.replace(cfg, learner=learner, plugins=plugins, stream=stream, run_dir=run_dir)


def _fields(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj) if obj is not None else {}


def schedule_counts(stream: Stream, schedule: str, cfg: ExperimentConfig) -> np.ndarray:
    sizes = [task.n_train for task in stream.tasks]
    return SCHEDULES.get(schedule)(cfg.stream.rehearsal).counts(stream.order, sizes)


def write_schedule(run: RunFolder, counts: np.ndarray, order: list[int]) -> None:
    header = ["phase", "new_task", *[f"task_{j}" for j in range(counts.shape[1])], "total"]
    rows = [[k, order[k], *counts[k].tolist(), int(counts[k].sum())] for k in range(counts.shape[0])]
    run.write_csv("schedule_counts.csv", header, rows)
    schedule_png(counts, run.path / "schedule_counts.png")


def choose_run_dir(cfg: ExperimentConfig) -> str:
    """The run folder: `run_dir`, else a new timestamped one, which DDP workers must share with rank 0."""
    if cfg.run_dir:
        return cfg.run_dir
    if rank_zero_only.rank != 0 and os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    run_dir = str(default_run_dir(cfg))
    # Lightning's DDP launcher re-runs this command line in worker processes, which inherit the environment.
    os.environ[RUN_DIR_ENV] = run_dir
    return run_dir


def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    parts = resolve_components(cfg)
    run_dir = choose_run_dir(cfg)
    cfg = resolved_config(cfg, parts, run_dir)
    stream = STREAMS.get(cfg.stream.name)(cfg)
    counts = schedule_counts(stream, parts.schedule, cfg)
    run = RunFolder(run_dir)
    if rank_zero_only.rank == 0:  # DDP workers re-run this command; only rank 0 writes the run folder
        run.prepare(cfg)
        write_schedule(run, counts, stream.order)
        print(f"[cltrain] {cfg.name}: {stream.n_phases} phases, schedule {parts.schedule!r}, training samples per "
              f"phase {counts.sum(1).tolist()} (per task: {run.path / 'schedule_counts.csv'})", flush=True)

    torch.manual_seed(cfg.seed)  # model initialisation depends on the seed alone
    def build_model() -> torch.nn.Module:
        return MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)

    learner = parts.learner_cls(build_model(), cfg.optim, parts.method_cfg, stream.class_mask(), build_model)
    ctx = PluginContext(seed=cfg.seed, batch_size=cfg.trainer.batch_size, run_dir=run_dir)
    plugins = {name: cls(pcfg, ctx) for name, (cls, pcfg) in parts.plugin_cfgs.items()}
    return ContinualTrainer(cfg, stream, learner, plugins, counts, run).fit()
