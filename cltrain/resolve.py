"""Resolving an experiment's components: every registry name, component section and combination of choices
is checked here, before any data, disk or training code is touched.

The rules are written once and run twice: by `cltrain fit` on the catalog (the components read from their
source, cltrain/catalog.py: no torch or Lightning import, so a bad value is answered at once), and by
`run_experiment` on the imported registries (the classes it then builds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cltrain import catalog
from cltrain.config import STREAM_FAMILY_KEYS, ExperimentConfig, StreamConfig, component_config
from cltrain.errors import ConfigError

# (registry variable, name) -> the component: an imported class / function, or a catalog Entry with the same
# attributes (Config, presentations, incompatible_plugins, schedule, syncs_own_gradients)
Lookup = Callable[[str, str], Any]


@dataclass
class Components:
    """The validated choices of an experiment, before any data is loaded."""

    learner_cls: Any
    method_cfg: Any
    plugin_cfgs: dict[str, tuple[Any, Any]]
    schedule: str


def resolve_components(cfg: ExperimentConfig, lookup: Lookup) -> Components:
    """Check every registry name and component section; fail before touching data or disk."""
    learner_name = str(cfg.learner.get("name", "finetune"))
    learner = lookup("LEARNERS", learner_name)
    method_cfg = component_config(cfg.learner, learner.Config, "learner", cfg)
    check_presentation(f"learner.name={learner_name!r}", learner, cfg)
    plugin_cfgs = {}
    for name, section in cfg.plugins.items():
        plugin = lookup("PLUGINS", name)
        plugin_cfgs[name] = (plugin, component_config(section or {}, plugin.Config, f"plugins.{name}", cfg))
        check_presentation(f"plugins.{name}", plugin, cfg)
        if name in learner.incompatible_plugins:
            raise ConfigError(f"plugins.{name} cannot run with learner.name={learner_name!r}: "
                              f"{learner.incompatible_plugins[name]} (valid: remove plugins.{name})")
        check_learner_needs(name, plugin, plugin_cfgs[name][1], learner, learner_name)
    schedule = resolve_schedule(cfg, learner, learner_name, lookup)
    check_stream_keys(cfg, lookup("STREAMS", cfg.stream.name))
    lookup("DATASETS", cfg.stream.dataset)
    lookup("MODELS", cfg.model.name)
    check_processes(cfg, learner, learner_name)
    return Components(learner, method_cfg, plugin_cfgs, schedule)


def check_config(cfg: ExperimentConfig) -> Components:
    """The same rules on the catalog: what `cltrain fit` runs before it imports torch or Lightning."""
    return resolve_components(cfg, catalog.lookup)


def check_presentation(who: str, component: Any, cfg: ExperimentConfig) -> None:
    """A component declares the stream presentations it works with (its `presentations` class attribute)."""
    if cfg.stream.presentation not in component.presentations:
        valid = component.presentations
        raise ConfigError(f"{who} needs a {' or '.join(valid)} stream; "
                          f"stream.presentation={cfg.stream.presentation!r} (valid: {', '.join(valid)})")


def check_learner_needs(name: str, plugin: Any, pcfg: Any, learner: Any, learner_name: str) -> None:
    """A plugin setting that only means something with a learner of some trait (its `learner_needs`)."""
    for (key, value), trait in plugin.learner_needs.items():
        if getattr(pcfg, key) == value and not getattr(learner, trait):
            raise ConfigError(f"plugins.{name}.{key}={value!r} needs a learner that {trait.replace('_', ' ')}; "
                              f"learner.name={learner_name!r} does not (valid: another {key})")


def check_stream_keys(cfg: ExperimentConfig, stream: Any) -> None:
    """A family-specific stream key changed from its default must be read by the chosen family (its `reads`)."""
    defaults = StreamConfig()
    for key in STREAM_FAMILY_KEYS:
        value, default = getattr(cfg.stream, key), getattr(defaults, key)
        if value != default and key not in getattr(stream, "reads", ()):
            raise ConfigError(f"stream.{key}={value!r} is not read by stream.name={cfg.stream.name!r} (it would be "
                              f"ignored); valid: its default, {default!r}, or a stream family that reads it")


def resolve_schedule(cfg: ExperimentConfig, learner: Any, learner_name: str, lookup: Lookup) -> str:
    """The rehearsal schedule: the configured one, or the one the learner requires (joint training)."""
    schedule = cfg.stream.schedule
    lookup("SCHEDULES", schedule)
    if learner.schedule is None:
        return schedule
    if schedule not in ("none", learner.schedule):
        raise ConfigError(f"learner.name={learner_name!r} trains in the {learner.schedule!r} environment; "
                          f"stream.schedule={schedule!r} conflicts (valid: none, {learner.schedule})")
    return learner.schedule


def check_processes(cfg: ExperimentConfig, learner: Any, learner_name: str) -> None:
    # cltrain.distributed imports Lightning; its constant is read from the source like the components are.
    self_sync = catalog.light_module("cltrain.distributed").SELF_SYNC_STRATEGIES
    t = cfg.trainer
    if t.several_processes and learner.syncs_own_gradients and t.strategy not in self_sync:
        raise ConfigError(f"learner.name={learner_name!r} syncs its own gradients and runs several "
                          f"processes only with plain DDP; trainer.strategy={t.strategy!r} "
                          f"(valid: {', '.join(self_sync)})")
