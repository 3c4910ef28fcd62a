"""Typed experiment configs, OmegaConf loading, overrides and validation.

An experiment is a YAML file merged onto `ExperimentConfig`'s defaults, then command-line dotlist overrides.
Method- and plugin-specific sections (`learner`, `plugins.<name>`) are validated against the dataclass that
the chosen component registers, so every key anywhere is checked and every error names the valid choices.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from cltrain.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def choice(default: Any, *options: Any) -> Any:
    """A field whose value must be one of `options` (checked by `validate_choices`)."""
    return field(default=default, metadata={"choices": options})


@dataclass
class DataConfig:
    root: Optional[str] = None  # None: $CLTRAIN_DATA, else ~/.cache/cltrain/data
    download: bool = True  # try torchvision's download when files are missing (fails clearly offline)


@dataclass
class RehearsalConfig:
    """How much old data each phase rehearses; read by the schedules in cltrain/streams/schedules.py."""

    form: str = choice("min_proportion", "min_proportion", "shifted")
    p_min: float = 0.10  # min_proportion form: the oldest task keeps p_min*N in the last phase
    n0: Optional[float] = None  # shifted form: n(x) = n0 * (1 + x/s)^-beta; None: N (paper code: 57927)
    s: float = 10.0
    beta: float = 5.6
    nested: bool = True  # the samples rehearsed in phase k are a subset of those in phase k-1
    budget_match: bool = True  # uniform/exponential rehearse as many samples in total as the power law
    uniform_count: Optional[int] = None  # uniform without budget matching: samples per old task per phase
    exp_rate: Optional[float] = None  # exponential n(x) = N*exp(-rate*x); None: fitted to the budget


@dataclass
class StreamConfig:
    name: str = "permuted"  # a registered stream family: permuted, rotated, split, split_cifar10, ...
    dataset: str = "mnist"  # a registered dataset: mnist, fashion_mnist, cifar10, cifar100
    n_tasks: int = 10
    presentation: str = choice("task_aware", "task_aware", "task_agnostic")
    scenario: str = choice("class_incremental", "class_incremental", "task_incremental")  # split streams
    schedule: str = "none"  # a registered rehearsal schedule: none, joint, powerlaw, uniform, exponential
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)
    first_identity: bool = True  # permuted: task 0 keeps the original pixel order
    max_angle: float = 180.0  # rotated: task t is rotated by t * max_angle / n_tasks degrees
    train_per_task: Optional[int] = None  # subsample each task's training set (CPU-scale runs)
    test_per_task: Optional[int] = None
    order: Optional[list[int]] = None  # task id per phase, e.g. [0, 1, 2, 1, 3] for a recurring task
    options: dict[str, Any] = field(default_factory=dict)  # the stream family's own typed options (metaworld)


@dataclass
class ModelConfig:
    name: str = "mlp"  # a registered model: mlp, lenet
    hidden: list[int] = field(default_factory=lambda: [512, 512])  # mlp widths
    options: dict[str, Any] = field(default_factory=dict)  # the model's own typed options (e.g. dt: DTConfig)


@dataclass
class OptimConfig:
    name: str = choice("sgd", "sgd", "adam")
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    reset_per_task: bool = False  # a fresh optimizer state at each phase (False: one optimizer for the run)


@dataclass
class TrainerConfig:
    epochs_per_task: int = 1
    steps_per_task: Optional[int] = None  # iterations per phase; overrides epochs_per_task when set
    batch_size: int = 128
    eval_batch_size: int = 2000
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    progress_bar: bool = True
    checkpoint: bool = True  # save a checkpoint after each phase (needed for resume)

    @property
    def several_processes(self) -> bool:
        """Does this ask for more than one training process (devices > 1, all devices, several nodes)?"""
        d = self.devices
        many_devices = (isinstance(d, int) and d > 1) or str(d) == "-1" or (isinstance(d, (list, tuple)) and len(d) > 1)
        return many_devices or self.num_nodes > 1


@dataclass
class WandbConfig:
    mode: str = choice("offline", "offline", "online", "disabled")
    project: str = "cltrain"
    entity: Optional[str] = None
    name: Optional[str] = None


@dataclass
class LoggerConfig:
    csv: bool = True  # Lightning's per-step CSV log under <run_dir>/logs
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class SlurmConfig:
    """sbatch options for `cltrain sweep --launcher slurm` (one array task per grid point)."""

    partition: Optional[str] = None
    time: str = "02:00:00"
    cpus_per_task: int = 2
    mem: Optional[str] = None  # e.g. "16G"
    gpus_per_node: int = 0
    ntasks_per_node: Optional[int] = None  # None: trainer.devices when it is a number, else 1
    max_parallel: Optional[int] = None  # array throttle: at most this many points at once
    signal_grace_s: int = 90  # SIGUSR1 this long before the time limit: checkpoint and requeue
    extra: list[str] = field(default_factory=list)  # more lines, e.g. ["#SBATCH --account=abc"]
    setup: list[str] = field(default_factory=list)  # shell lines before the run, e.g. ["module load cuda"]


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    run_dir: Optional[str] = None  # None: runs/<name>/<timestamp>
    resume: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    learner: dict[str, Any] = field(default_factory=lambda: {"name": "finetune"})
    plugins: dict[str, Any] = field(default_factory=dict)  # plugin name -> its config section
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def data_root(cfg: DataConfig) -> Path:
    """The data root: `data.root`, else $CLTRAIN_DATA, else a user cache folder."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    if os.environ.get("CLTRAIN_DATA"):
        return Path(os.environ["CLTRAIN_DATA"]).expanduser()
    return Path.home() / ".cache" / "cltrain" / "data"


def experiments_dirs() -> list[Path]:
    """Where experiment names are looked up: $CLTRAIN_EXPERIMENTS, ./experiments, the project's experiments/."""
    dirs = [Path(os.environ["CLTRAIN_EXPERIMENTS"])] if os.environ.get("CLTRAIN_EXPERIMENTS") else []
    return dirs + [Path.cwd() / "experiments", PROJECT_ROOT / "experiments"]


def find_experiment(experiment: str) -> Path:
    path = Path(experiment)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    for folder in experiments_dirs():
        candidate = folder / f"{experiment}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({str(p.relative_to(d))[:-5] for d in experiments_dirs() if d.is_dir() for p in d.rglob("*.yaml")})
    raise ConfigError(f"experiment {experiment!r} not found; give a YAML path or one of: {', '.join(known)}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Read an experiment file, merging it onto the file named by its `extends:` key, if any."""
    if path in seen:
        raise ConfigError(f"experiment {path} extends itself (cycle: {' -> '.join(map(str, seen))})")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in several types
        raise ConfigError(f"cannot read experiment {path}: {exc}") from None
    parent = node.pop("extends", None)
    if parent is None:
        return node
    base_path = find_experiment(str(parent)) if not (path.parent / str(parent)).is_file() else path.parent / str(parent)
    return OmegaConf.merge(_read_yaml(base_path, seen + (path,)), node)


def _explain(exc: OmegaConfBaseException, schema: Any) -> ConfigError:
    """Turn an OmegaConf error into one line naming the key and what is valid."""
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = schema() if isinstance(schema, type) else schema  # an instance: nested defaults exist
        for part in filter(None, parent.split(".")):
            node = getattr(node, part, None)
        valid = [f.name for f in fields(node)] if is_dataclass(node) else []
        where = f" under '{parent}'" if parent else ""
        return ConfigError(f"unknown config key '{key}'; valid keys{where}: {', '.join(valid)}")
    msg = str(exc).splitlines()[0]
    return ConfigError(f"bad value for config key '{key}': {msg}")


def merge_checked(schema: Any, *layers: Any) -> DictConfig:
    """Merge layers (dicts, DictConfigs, dotlists) onto a dataclass schema, raising ConfigError on bad input."""
    try:
        merged = OmegaConf.structured(schema)
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
        return merged
    except OmegaConfBaseException as exc:
        raise _explain(exc, schema) from None


def parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. trainer.epochs_per_task=2)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {exc}") from None


def validate_choices(obj: Any, prefix: str = "") -> None:
    """Check every `choice(...)` field of a (nested) dataclass instance."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        options = f.metadata.get("choices")
        if options and value not in options:
            raise ConfigError(f"bad value {value!r} for '{prefix}{f.name}'; valid: {', '.join(map(str, options))}")
        if is_dataclass(value):
            validate_choices(value, f"{prefix}{f.name}.")


def check_positive(cfg: ExperimentConfig) -> None:
    """Numeric sanity that types alone do not catch."""
    checks = {
        "stream.n_tasks": cfg.stream.n_tasks,
        "trainer.batch_size": cfg.trainer.batch_size,
        "trainer.eval_batch_size": cfg.trainer.eval_batch_size,
        "trainer.epochs_per_task": cfg.trainer.epochs_per_task,
        "optim.lr": cfg.optim.lr,
    }
    for key, value in checks.items():
        if value <= 0:
            raise ConfigError(f"bad value {value!r} for '{key}'; valid: a number > 0")
    if cfg.trainer.steps_per_task is not None and cfg.trainer.steps_per_task <= 0:
        raise ConfigError(f"bad value {cfg.trainer.steps_per_task!r} for 'trainer.steps_per_task'; valid: > 0 or null")


def component_config(section: dict[str, Any], schema: Any, where: str) -> Any:
    """Validate a component's section (e.g. `learner` minus `name`) against its config dataclass."""
    body = {k: v for k, v in section.items() if k != "name"}
    if schema is None:
        if body:
            raise ConfigError(f"'{where}' takes no options, got: {', '.join(body)}")
        return None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), body)
    except ConfigKeyError as exc:
        valid = ", ".join(f.name for f in fields(schema))
        raise ConfigError(f"unknown config key '{where}.{exc.full_key}'; valid keys under '{where}': {valid}") from None
    except (ValidationError, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad value for '{where}.{getattr(exc, 'full_key', '?')}': {str(exc).splitlines()[0]}") from None
    obj = OmegaConf.to_object(merged)
    validate_choices(obj, f"{where}.")
    return obj


def load_config(experiment: str, overrides: list[str] = ()) -> ExperimentConfig:
    """Experiment name or path + dotlist overrides -> a validated ExperimentConfig."""
    path = find_experiment(experiment)
    merged = merge_checked(ExperimentConfig, _read_yaml(path), parse_overrides(list(overrides)))
    if OmegaConf.select(merged, "name") == "experiment":
        merged.name = experiment if not experiment.endswith((".yaml", ".yml")) else path.stem
    cfg: ExperimentConfig = OmegaConf.to_object(merged)
    validate_choices(cfg)
    check_positive(cfg)
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg) if is_dataclass(cfg) else cfg)


def as_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
