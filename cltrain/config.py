"""Typed experiment configs, OmegaConf loading, overrides and validation.

An experiment is a YAML file merged onto `ExperimentConfig`'s defaults, then command-line dotlist overrides.
Method- and plugin-specific sections (`learner`, `plugins.<name>`) are validated against the dataclass that
the chosen component registers, so every key anywhere is checked and every error names the valid choices.

What a value may be is declared on the field itself (`choice`, `bounded`, `positive`, `count`, `text`) and
checked by one walker (`check_fields`); rules that tie several keys together live in a `validate(where, exp)`
method of the section's dataclass. Nothing here imports torch or Lightning: a bad key is answered at once.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from cltrain.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HUGE = 10**9  # the upper bound of counts that have no natural one (a typo of a few digits still gets through)


# ---- field declarations: what each key may hold ---------------------------------------------------------
def choice(default: Any, *options: Any) -> Any:
    """A field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": options})


@dataclass(frozen=True)
class Range:
    """An interval for a number (or for every number of a list); NaN and infinities are never inside."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self, key: str) -> str:
        left = "" if self.low is None else f"{_num(self.low)} {'<' if self.low_open else '<='} "
        right = "" if self.high is None else f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return f"{left}{key}{right}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _with_default(default: Any, metadata: dict[str, Any]) -> Any:
    if isinstance(default, (list, dict)):  # mutable defaults need a factory
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def bounded(default: Any, low: Optional[float] = None, high: Optional[float] = None, *,
            low_open: bool = False, high_open: bool = False) -> Any:
    """A number in [low, high] (either end open or absent); None passes when the field is Optional."""
    return _with_default(default, {"range": Range(low, high, low_open, high_open)})


def positive(default: Any, high: float = HUGE) -> Any:
    """A number > 0 (learning rates, strengths)."""
    return bounded(default, 0, high, low_open=True)


def count(default: Any, high: float = HUGE, low: int = 1) -> Any:
    """A whole number of things, at least `low` (1 unless said)."""
    return bounded(default, low, high)


def fraction(default: Any, *, low_open: bool = False, high_open: bool = False) -> Any:
    """A number in [0, 1] (ends open as asked)."""
    return bounded(default, 0, 1, low_open=low_open, high_open=high_open)


def text(default: Any, pattern: str = r"\S", hint: str = "a non-empty string") -> Any:
    """A string matching `pattern` (searched); None passes when the field is Optional."""
    return _with_default(default, {"pattern": (pattern, hint)})


def check_fields(obj: Any, where: str = "", exp: Any = None) -> None:
    """Check every declared choice, range and pattern of a (nested) dataclass instance, then its own
    `validate(where, exp)` rules (keys that constrain each other, or the rest of the experiment `exp`)."""
    for f in fields(obj):
        value, key = getattr(obj, f.name), f"{where}{f.name}"
        _check_value(key, value, f.metadata)
        if is_dataclass(value):
            check_fields(value, f"{key}.", exp)
    rules = getattr(obj, "validate", None)
    if callable(rules):
        rules(where, exp)


def _check_value(key: str, value: Any, meta: Any) -> None:
    if value is None:
        return  # Optional fields: OmegaConf already refused None where the type does not allow it
    options = meta.get("choices")
    if options and value not in options:
        raise ConfigError(f"bad value {value!r} for '{key}'; valid: {', '.join(map(str, options))}")
    span: Optional[Range] = meta.get("range")
    if span is not None:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item not in span:
                what = f"every element of '{key}'" if items is value else f"'{key}'"
                raise ConfigError(f"bad value {value!r} for {what}; valid: {span.describe(key.rsplit('.', 1)[-1])}")
    pattern = meta.get("pattern")
    if pattern and not re.search(pattern[0], str(value)):
        raise ConfigError(f"bad value {value!r} for '{key}'; valid: {pattern[1]}")


def bad(key: str, value: Any, valid: str) -> ConfigError:
    """The one-line error for a value that the rules of its section refuse."""
    return ConfigError(f"bad value {value!r} for '{key}'; valid: {valid}")


# ---- the sections -------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    root: Optional[str] = text(None)  # None: $CLTRAIN_DATA, else ~/.cache/cltrain/data
    download: bool = True  # try torchvision's download when files are missing (fails clearly offline)


@dataclass
class RehearsalConfig:
    """How much old data each phase rehearses; read by the schedules in cltrain/streams/schedules.py."""

    form: str = choice("min_proportion", "min_proportion", "shifted")
    p_min: float = fraction(0.10, low_open=True)  # min_proportion form: the oldest task keeps p_min*N at the end
    n0: Optional[float] = positive(None)  # shifted form: n(x) = n0 * (1 + x/s)^-beta; None: N (paper code: 57927)
    s: float = positive(10.0)
    beta: float = bounded(5.6, 0, 1000)
    nested: bool = True  # the samples rehearsed in phase k are a subset of those in phase k-1
    budget_match: bool = True  # uniform/exponential rehearse as many samples in total as the power law
    # what budget_match matches: stored = samples stored over the whole run; exposure = the samples of every
    # phase, so each phase presents as much rehearsal (and new-task data) as the power law's
    match: str = choice("stored", "stored", "exposure")
    uniform_count: Optional[int] = count(None)  # uniform without budget matching: samples per old task per phase
    exp_rate: Optional[float] = positive(None, high=1000)  # exponential n(x) = N*exp(-rate*x); None: fitted

    def validate(self, where: str, exp: "ExperimentConfig") -> None:
        # An option that the chosen schedule would not read is refused rather than silently ignored.
        schedule = exp.stream.schedule
        if self.n0 is not None and self.form != "shifted":
            raise bad(f"{where}n0", self.n0, f"null unless {where}form=shifted")
        if self.uniform_count is not None and (schedule != "uniform" or self.budget_match):
            raise bad(f"{where}uniform_count", self.uniform_count,
                      f"null unless stream.schedule=uniform and {where}budget_match=false")
        if self.exp_rate is not None and (schedule != "exponential" or self.budget_match):
            raise bad(f"{where}exp_rate", self.exp_rate,
                      f"null unless stream.schedule=exponential and {where}budget_match=false")
        if self.match != "stored" and (schedule not in ("uniform", "exponential") or not self.budget_match):
            raise bad(f"{where}match", self.match,
                      f"stored unless stream.schedule is uniform or exponential and {where}budget_match=true")


# StreamConfig keys that only some stream families read (each declares them: STREAMS.register(name, reads=...))
STREAM_FAMILY_KEYS = ("scenario", "class_order", "active_classes", "first_identity", "max_angle", "pixels", "pad")


@dataclass
class StreamConfig:
    name: str = "permuted"  # a registered stream family: permuted, rotated, split, split_cifar10, ...
    dataset: str = "mnist"  # a registered dataset: mnist, fashion_mnist, cifar10, cifar100
    n_tasks: int = count(10, high=1000)
    presentation: str = choice("task_aware", "task_aware", "task_agnostic")
    # split streams: one head over all classes / the task's classes only / the position within the task
    scenario: str = choice("class_incremental", "class_incremental", "task_incremental", "domain_incremental")
    # split streams: which classes form the tasks. natural: in label order ({0,1}, {2,3}, ...); shuffled: dealt
    # in an order drawn from the run's seed, so each seed has its own pairs (van de Ven & Tolias's code keeps
    # natural order on its first seed only). Which classes share a task changes how hard the tasks are.
    class_order: str = choice("natural", "natural", "shuffled")
    # class-incremental split streams: which classes the training loss's softmax covers. all: every class from the
    # first phase on (cltrain's default), so the classes of tasks not met yet are pushed down from the start.
    # seen: the classes of the tasks met so far, as van de Ven & Tolias's code trains Class-IL (its "active
    # classes"; EWC's Fisher is taken over them too). Prediction always chooses among every class.
    active_classes: str = choice("all", "all", "seen")
    schedule: str = "none"  # a registered rehearsal schedule: none, joint, powerlaw, uniform, exponential
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)
    first_identity: bool = True  # permuted: task 0 keeps the original pixel order
    max_angle: float = bounded(180.0, -360, 360)  # rotated: task t is rotated by t * max_angle / n_tasks degrees
    # image streams' input scale: (x/255 - dataset mean) / dataset sd, or x/255 in [0, 1]. It is not cosmetic for
    # regularisers: with unit pixels a blank pixel is 0, so its first-layer weights get no gradient, no Fisher and
    # no SI importance on that task (van de Ven & Tolias's protocol feeds unit pixels)
    pixels: str = choice("standardised", "standardised", "unit")
    # image streams: a border of this many blank pixels around every image, before any task transform. Not
    # cosmetic either: van de Ven & Tolias pad MNIST to 32x32 and permute all 1,024 positions, so each task's
    # digit pixels land on a different part of a wider input layer (2 reproduces that; 0 keeps 28x28). A rotated
    # digit's corners then stay inside the image; standardised pixels keep the dataset's (unpadded) mean and sd
    pad: int = count(0, high=64, low=0)
    train_per_task: Optional[int] = count(None)  # subsample each task's training set (CPU-scale runs)
    test_per_task: Optional[int] = count(None)
    # held out of each task's training data (seeded per task) and scored after every phase: val_acc_matrix
    val_fraction: float = fraction(0.0, high_open=True)
    order: Optional[list[int]] = count(None, low=0, high=999)  # task id per phase, e.g. [0, 1, 2, 1, 3] (recurring)
    options: dict[str, Any] = field(default_factory=dict)  # the stream family's own typed options (metaworld)

    def validate(self, where: str, exp: "ExperimentConfig") -> None:
        if self.active_classes != "all":
            self.validate_active_classes(where, exp.learner["name"])
        if self.order is not None and set(self.order) != set(range(self.n_tasks)):
            raise bad(f"{where}order", self.order,
                      f"a list of task ids covering 0..{self.n_tasks - 1} ({where}n_tasks)")
        if self.val_fraction > 0 and self.train_per_task is not None and self.train_per_task < 2:
            raise bad(f"{where}train_per_task", self.train_per_task,
                      f">= 2 when {where}val_fraction > 0 (one sample for training, one for validation)")

    def validate_active_classes(self, where: str, learner: str) -> None:
        """`seen` needs task boundaries to know which classes were met, a head over all classes to narrow, and a
        learner whose loss goes through the framework's logits (one with its own would ignore it)."""
        from cltrain.catalog import lookup

        value = self.active_classes
        if self.scenario != "class_incremental":
            raise bad(f"{where}active_classes", value,
                      f"all unless {where}scenario=class_incremental (task-incremental already restricts the loss to "
                      f"the task's classes; domain-incremental meets every class at once)")
        if self.presentation != "task_aware":
            raise bad(f"{where}active_classes", value,
                      f"all unless {where}presentation=task_aware (the classes met are known from the task boundaries)")
        if lookup("LEARNERS", learner).own_logits:
            raise bad(f"{where}active_classes", value,
                      f"all: learner.name={learner!r} computes its own logits, which the restriction does not reach")


@dataclass
class ModelConfig:
    name: str = "mlp"  # a registered model: mlp, lenet
    hidden: list[int] = count([512, 512], high=1 << 16)  # mlp widths
    options: dict[str, Any] = field(default_factory=dict)  # the model's own typed options (e.g. dt: DTConfig)


@dataclass
class OptimConfig:
    name: str = choice("sgd", "sgd", "adam")
    lr: float = positive(0.01, high=10)
    momentum: float = fraction(0.9, high_open=True)
    weight_decay: float = fraction(0.0)
    reset_per_task: bool = False  # a fresh optimizer state at each phase (False: one optimizer for the run)
    # rescale each step's gradients to at most this global L2 norm (None: no clipping); it caps the size of one
    # step, which is what keeps a long SGD-momentum stream from a step that kills the network (TAME's baselines)
    grad_clip_norm: Optional[float] = positive(None, high=1e6)

    def validate(self, where: str, exp: "ExperimentConfig") -> None:
        if self.grad_clip_norm is None:
            return
        from cltrain.catalog import lookup

        name = exp.learner["name"]
        if lookup("LEARNERS", name).optimizes_itself:
            raise bad(f"{where}grad_clip_norm", self.grad_clip_norm,
                      f"null: learner.name={name!r} steps its own optimizers, which the trainer's clipping "
                      "does not reach")


# Lightning's names that cltrain's trainer supports; tests/test_bad_inputs.py checks them against Lightning's
# own registries, so they are known without importing Lightning (seconds) just to refuse a typo.
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
              "ddp_find_unused_parameters_false", "single_device")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")


@dataclass
class TrainerConfig:
    epochs_per_task: int = count(1, high=100_000)
    steps_per_task: Optional[int] = count(None)  # iterations per phase; overrides epochs_per_task when set
    batch_size: int = count(128, high=1 << 20)
    eval_batch_size: int = count(2000, high=1 << 20)
    # aligned: every batch holds one phase's rows; mixed: task-agnostic streams batched straight across
    # boundaries (the batch at a boundary holds both tasks' rows), as the TAME paper's code batches its stream
    boundary_batches: str = choice("aligned", "aligned", "mixed")
    accelerator: str = choice("cpu", *ACCELERATORS)
    devices: Any = 1  # a number of devices (-1: all), "auto", a list of device indices or "0,1"
    strategy: str = choice("auto", *STRATEGIES)
    num_nodes: int = count(1, high=10_000)
    precision: str = choice("32-true", *PRECISIONS)
    progress_bar: bool = True
    checkpoint: bool = True  # save a checkpoint after each phase (needed for resume)
    # score the untrained network on every task before the first phase: the b_j of forward transfer (and, with
    # a validation split, what `cltrain report --select val` tells a stalled grid point by); false saves one
    # evaluation of every test set and leaves acc_init and fwt null
    eval_init: bool = True
    # also keep the network's weights at the start (checkpoints/phase_start.pt) and after every phase k
    # (checkpoints/phase_<k>.pt): task vectors for `cltrain merge RUN_DIR source=phases`
    keep_phase_weights: bool = False
    # MiB (on the training device) a phase's transformed inputs may take to be computed once per phase instead
    # of once per batch; the same batches either way (a speed / memory trade only); 0: always per batch
    materialise_mb: int = count(1024, high=1 << 20, low=0)

    @property
    def several_processes(self) -> bool:
        """Does this ask for more than one training process (devices > 1, all devices, several nodes)?"""
        d = self.devices
        many_devices = (isinstance(d, int) and d > 1) or str(d) == "-1" or (isinstance(d, (list, tuple)) and len(d) > 1)
        return many_devices or self.num_nodes > 1

    def validate(self, where: str, exp: "ExperimentConfig") -> None:
        # Lightning would refuse these only when it builds its Trainer, after the run folder exists.
        from cltrain.hardware import check_devices

        check_devices(self, where)
        if self.keep_phase_weights:
            from cltrain.catalog import lookup

            name = exp.learner["name"]
            if not lookup("LEARNERS", name).single_network:
                raise bad(f"{where}keep_phase_weights", True,
                          f"false: learner.name={name!r} keeps state outside its network, whose weights alone are "
                          f"not the learner (TAME's experts: cltrain merge source=tame)")
        if self.boundary_batches == "mixed" and exp.stream.presentation != "task_agnostic":
            # task-aware phases are fitted one at a time, with the task hooks between them
            raise bad(f"{where}boundary_batches", self.boundary_batches,
                      "aligned unless stream.presentation=task_agnostic")
        if not self.eval_init and exp.stream.val_fraction > 0:
            # selection would then pass every grid point as learning: its guard compares with val_acc_init
            raise bad(f"{where}eval_init", False,
                      "true when stream.val_fraction > 0 (`cltrain report --select val` rejects grid points that "
                      "stop learning by the untrained network's validation scores)")


@dataclass
class WandbConfig:
    mode: str = choice("offline", "offline", "online", "disabled")
    project: str = text("cltrain")
    entity: Optional[str] = text(None)
    name: Optional[str] = text(None)


@dataclass
class LoggerConfig:
    csv: bool = True  # Lightning's per-step CSV log under <run_dir>/logs
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class SlurmConfig:
    """sbatch options for `cltrain sweep --launcher slurm` (one array task per grid point)."""

    partition: Optional[str] = text(None)
    time: str = text("02:00:00", r"^(\d+-)?\d+(:\d\d){0,2}$", "sbatch's time: MM, HH:MM:SS or D-HH:MM:SS")
    cpus_per_task: int = count(2, high=4096)
    mem: Optional[str] = text(None, r"^\d+[KMGT]?$", "sbatch's memory: a number with K, M, G or T (e.g. 16G)")
    gpus_per_node: int = count(0, high=64, low=0)
    ntasks_per_node: Optional[int] = count(None, high=4096)  # None: trainer.devices when it is a number, else 1
    max_parallel: Optional[int] = count(None)  # array throttle: at most this many points at once
    signal_grace_s: int = count(90, high=86_400)  # SIGUSR1 this long before the time limit: checkpoint and requeue
    extra: list[str] = field(default_factory=list)  # more lines, e.g. ["#SBATCH --account=abc"]
    setup: list[str] = field(default_factory=list)  # shell lines before the run, e.g. ["module load cuda"]


@dataclass
class ExperimentConfig:
    name: str = text("experiment")
    seed: int = count(0, low=0, high=2**32 - 1)  # numpy's seeds stop at 2**32 - 1
    run_dir: Optional[str] = text(None)  # None: runs/<name>/<timestamp>
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

    def validate(self, where: str, exp: "ExperimentConfig") -> None:
        if self.run_dir is not None:
            check_creatable(Path(self.run_dir).expanduser(), f"{where}run_dir")


def check_creatable(path: Path, key: str) -> None:
    """A folder that exists or can be made: checked up front, so a run never stops at its first write."""
    if path.exists() and not path.is_dir():
        raise bad(key, str(path), "a folder (this is a file)")
    ancestor = next(p for p in [path, *path.parents] if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise bad(key, str(path), f"a folder that can be created ({ancestor} is not a writable folder)")


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
    except Exception as exc:  # yaml errors come in several types, over several lines
        raise ConfigError(f"cannot read experiment {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"experiment {path} holds a {type(node).__name__}; valid: a mapping of config keys")
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
            try:
                merged = OmegaConf.merge(merged, layer)
            except TypeError:  # OmegaConf's plain error for a section given where a list belongs (or the reverse)
                raise _container_mismatch(merged, layer) from None
        return merged
    except OmegaConfBaseException as exc:
        raise _explain(exc, schema) from None


def _container_mismatch(base: Any, layer: Any) -> ConfigError:
    key, valid = _find_mismatch(base, OmegaConf.to_container(layer) if isinstance(layer, DictConfig) else layer)
    return ConfigError(f"bad value for '{key}'; valid: {valid}")


def _find_mismatch(base: Any, layer: Any, prefix: str = "") -> tuple[str, str]:
    """The key where `layer` puts a list on a section or a section on a list, and what belongs there."""
    for key, value in (layer.items() if isinstance(layer, dict) else []):
        # The node, not its value: an Optional list that is None still knows it is a list.
        node = base._get_node(key) if isinstance(base, DictConfig) and key in base else None
        where = f"{prefix}{key}"
        if isinstance(node, ListConfig) and not isinstance(value, list):
            return where, f"a list, e.g. {where}=[1,2]"
        if isinstance(node, DictConfig) and not isinstance(value, dict):
            return where, f"a section of keys ({where}.<key>=...)"
        if isinstance(node, DictConfig):
            found = _find_mismatch(node, value, f"{where}.")
            if found[0] != "?":
                return found
    return "?", "a section where the schema has one, a list where it has a list"


def parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. trainer.epochs_per_task=2)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {exc}") from None


def component_config(section: dict[str, Any], schema: Any, where: str, exp: Any = None) -> Any:
    """Validate a component's section (e.g. `learner` minus `name`) against its config dataclass."""
    if not isinstance(section, dict):
        raise ConfigError(f"bad value {section!r} for '{where}'; valid: a section of keys (e.g. {where}.<key>=...)")
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
    except TypeError:  # a section given to a list field or a list to a section: OmegaConf raises a bare TypeError
        key, valid = _find_mismatch(OmegaConf.structured(schema), body, f"{where}.")
        raise ConfigError(f"bad value for '{key}'; valid: {valid}") from None
    obj = OmegaConf.to_object(merged)
    check_fields(obj, f"{where}.", exp)
    return obj


def load_config(experiment: str, overrides: list[str] = ()) -> ExperimentConfig:
    """Experiment name or path + dotlist overrides -> a validated ExperimentConfig."""
    path = find_experiment(experiment)
    merged = merge_checked(ExperimentConfig, _read_yaml(path), parse_overrides(list(overrides)))
    if OmegaConf.select(merged, "name") == "experiment":
        merged.name = experiment if not experiment.endswith((".yaml", ".yml")) else path.stem
    cfg: ExperimentConfig = OmegaConf.to_object(merged)
    try:  # OmegaConf checks list elements' types only when the object is structured again (e.g. [[1]] in a list[str])
        OmegaConf.structured(cfg)
    except OmegaConfBaseException as exc:
        raise _explain(exc, ExperimentConfig) from None
    check_fields(cfg, "", cfg)
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg) if is_dataclass(cfg) else cfg)


def as_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
