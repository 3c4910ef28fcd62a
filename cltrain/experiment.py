"""Config -> components -> ContinualTrainer: the Python API behind `cltrain fit`.

    from cltrain.config import load_config
    from cltrain.experiment import run_experiment
    metrics = run_experiment(load_config("bench/pmnist_naive", ["stream.n_tasks=3"]))
"""
from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only

import cltrain.learners  # noqa: F401  (registration)
import cltrain.nn  # noqa: F401
import cltrain.plugins  # noqa: F401
import cltrain.streams  # noqa: F401
from cltrain import resolve
from cltrain.config import ExperimentConfig
from cltrain.errors import ConfigError
from cltrain.learners.base import LEARNERS
from cltrain.nn.registry import MODELS
from cltrain.plots import schedule_png
from cltrain.plugins.base import PLUGINS, PluginContext
from cltrain.resolve import Components
from cltrain.run import RunFolder, default_run_dir
from cltrain.seeding import seeded
from cltrain.streams.base import STREAMS, Stream
from cltrain.streams.datasets import DATASETS
from cltrain.streams.schedules import SCHEDULES
from cltrain.trainer import ContinualTrainer

RUN_DIR_ENV = "CLTRAIN_RUN_DIR"  # shared with DDP worker processes, which re-run the same command line


# The imported registries, for resolve_components (the CLI ran the same checks on the catalog already).
REGISTRIES = {"LEARNERS": LEARNERS, "PLUGINS": PLUGINS, "STREAMS": STREAMS, "DATASETS": DATASETS,
              "SCHEDULES": SCHEDULES, "MODELS": MODELS}


def resolve_components(cfg: ExperimentConfig) -> Components:
    """Check every registry name and component section on the imported components (cltrain/resolve.py), then
    what only the imported components can check: the `stream.options` / `model.options` of the families that
    take them (components without a `check` take no options)."""
    parts = resolve.resolve_components(cfg, lambda registry, name: REGISTRIES[registry].get(name))
    _check_options(STREAMS.get(cfg.stream.name), cfg, cfg.stream.options, "stream.options",
                   f"stream.name={cfg.stream.name!r}")
    _check_options(MODELS.get(cfg.model.name), cfg.model, cfg.model.options, "model.options",
                   f"model.name={cfg.model.name!r}")
    return parts


def _check_options(component: Any, cfg: Any, options: dict, where: str, name: str) -> None:
    check = getattr(component, "check", None)
    if check is not None:
        check(cfg)
    elif options:
        raise ConfigError(f"'{where}' is not read by {name} (it takes no options), so it would be ignored; got: "
                          f"{', '.join(map(str, options))} (valid: no {where})")


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
    return str(default_run_dir(cfg))


@contextmanager
def exported(name: str, value: str) -> Iterator[None]:
    """os.environ[name] = value for the block only. Lightning's DDP launcher re-runs this command line in
    worker processes started inside the run, which inherit the environment; the caller gets its own back."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    parts = resolve_components(cfg)
    run_dir = choose_run_dir(cfg)
    with exported(RUN_DIR_ENV, run_dir):
        return _run(cfg, parts, run_dir)


def _run(cfg: ExperimentConfig, parts: Components, run_dir: str) -> dict[str, Any]:
    cfg = resolved_config(cfg, parts, run_dir)
    stream = STREAMS.get(cfg.stream.name)(cfg)
    counts = schedule_counts(stream, parts.schedule, cfg)
    run = RunFolder(run_dir)
    if rank_zero_only.rank == 0:  # DDP workers re-run this command; only rank 0 writes the run folder
        run.prepare(cfg)
        write_schedule(run, counts, stream.order)
        print(f"[cltrain] {cfg.name}: {stream.n_phases} phases, schedule {parts.schedule!r}, training samples per "
              f"phase {counts.sum(1).tolist()} (per task: {run.path / 'schedule_counts.csv'})", flush=True)

    def build_model() -> torch.nn.Module:  # callers seed it (seeding.seeded(seed, "model", j)) when they call it
        return MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)

    # The run's first network, and whatever a learner builds around it (IBCL's multi-chain head, a modulation
    # pool), depend on the seed alone: not on what drew from torch's global RNG before.
    with seeded(cfg.seed, "model", 0):
        model = build_model()
        learner = parts.learner_cls(model, cfg.optim, parts.method_cfg, stream.class_mask(), build_model,
                                    seed=cfg.seed)
    ctx = PluginContext(seed=cfg.seed, batch_size=cfg.trainer.batch_size, run_dir=run_dir, stream=stream)
    plugins = {name: cls(pcfg, ctx) for name, (cls, pcfg) in parts.plugin_cfgs.items()}
    return ContinualTrainer(cfg, stream, learner, plugins, counts, run).fit()
