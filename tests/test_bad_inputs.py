"""Every bad input is refused up front: exit 2, one line naming the key, no traceback, no run folder.

The walk below derives bad values of each kind (wrong type, out of range, empty, huge) from every config
field's declaration, for the global sections and for each registered learner's and plugin's Config, so a new
key is covered the day it is added (and a numeric key without a declared range fails the walk). For speed
the walk goes through `cltrain.cli.main` in-process (the console script's entry point); a sample goes
through the real `python -m cltrain.cli`.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Union

import pytest

from conftest import run_cli
from cltrain.config import ExperimentConfig, Range

# Small enough that a value wrongly accepted costs a second of training, not minutes, and still fails.
BASE = ["stream.n_tasks=2", "stream.train_per_task=200", "stream.test_per_task=50", "trainer.steps_per_task=1",
        "trainer.progress_bar=false", "logger.wandb.mode=disabled"]
DICT_SECTIONS = {"learner", "plugins"}  # their keys are walked through the registered components' Configs


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


def _below_above(span: Range, is_int: bool) -> list[str]:
    """Values just outside the declared range, and a huge one."""
    out = []
    if span.low is not None:
        out.append(_fmt(span.low if span.low_open else (span.low - 1 if is_int else span.low - 1e-6)))
    if span.high is not None:
        out.append(_fmt(span.high if span.high_open else (int(span.high) + 1 if is_int else span.high * 1.001 + 1e-6)))
        out.append("1000000000000000" if is_int else "1e300")
    return out


def bad_values(tp: Any, meta: Any) -> list[str]:
    """Override strings a field of type `tp` with declaration `meta` must refuse."""
    if typing.get_origin(tp) is Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        return ["maybe", "[1]"]
    if tp in (int, float):
        span = meta.get("range")
        assert span is not None, "every numeric key declares its range (bounded/positive/count/fraction)"
        kinds = ["lots", "[1]", *_below_above(span, tp is int)]
        return kinds + (["1.5"] if tp is int else ["nan", "inf", "-inf"])
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if item is str:
            return ["{a: 1}", "[[1]]"]
        span = meta.get("range")
        assert span is not None, "every list of numbers declares the range of its elements"
        return ["lots", "{a: 1}", *(f"[{v}]" for v in _below_above(span, item is int))]
    if tp is str:
        return ["''", "nonsense"] if "pattern" not in meta else ["''", "'   '"]
    if tp is Any:  # trainer.devices
        return ["0", "-2", "lots", "[]", "[0,0]", "true", "1.5"]
    raise AssertionError(f"no bad values known for type {tp}: extend bad_values")


def walk(schema: type, prefix: str = ""):
    """(key, type, metadata) of every leaf field of a (nested) config dataclass."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from walk(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is dict:
            continue  # a component's own options (stream.options, model.options): checked by that component
        elif f.name not in DICT_SECTIONS or prefix:
            yield f"{prefix}{f.name}", tp, f.metadata


def refused(main, capsys, tmp_path, args: list[str], key: str) -> str:
    run = tmp_path / "run"
    where = [] if key == "run_dir" else [f"run_dir={run}"]  # the bad run_dir itself is the last word
    code = main(["fit", "bench/pmnist_naive", *BASE, *args, *where])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (args, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, (args, err[-2000:])
    assert key.rsplit(".", 1)[-1] in lines[0], (args, lines[0])  # it names the key it refuses
    assert not run.exists(), args
    return lines[0]


def test_every_global_key_refuses_bad_values_of_each_kind(tmp_path, capsys):
    from cltrain.cli import main

    keys = list(walk(ExperimentConfig))
    assert len(keys) > 40  # the walk really sees the nested sections
    for key, tp, meta in keys:
        for value in bad_values(tp, meta):
            refused(main, capsys, tmp_path, [f"{key}={value}"], key)
    for section in DICT_SECTIONS:
        refused(main, capsys, tmp_path, [f"{section}=5"], section)


def _components():
    import cltrain.learners  # noqa: F401  (registration)
    import cltrain.plugins  # noqa: F401
    from cltrain.learners.base import LEARNERS
    from cltrain.plugins.base import PLUGINS

    # Names starting with "_" are registered by other test modules at run time: the CLI cannot know them.
    for name in (n for n in LEARNERS if not n.startswith("_")):
        yield "learner", name, LEARNERS.get(name), [f"learner.name={name}"]
    for name in (n for n in PLUGINS if not n.startswith("_")):
        yield f"plugins.{name}", name, PLUGINS.get(name), []


def test_every_learner_and_plugin_key_refuses_bad_values_of_each_kind(tmp_path, capsys):
    from cltrain.cli import main

    walked = 0
    for where, name, cls, pick in _components():
        presentation = [f"stream.presentation={cls.presentations[0]}"]
        if cls.Config is None:
            refused(main, capsys, tmp_path, [*pick, *presentation, f"{where}.anything=1"], "anything")
            continue
        for key, tp, meta in walk(cls.Config):
            for value in bad_values(tp, meta):
                refused(main, capsys, tmp_path, [*pick, *presentation, f"{where}.{key}={value}"], key)
                walked += 1
        refused(main, capsys, tmp_path, [*pick, *presentation, f"{where}.no_such_key=1"], "no_such_key")
    assert walked > 150


# The issue's list: ranges and combinations a new user tried, each with the key the line must name.
COMBINATIONS = [
    (["stream.schedule=powerlaw", "stream.rehearsal.p_min=0"], "p_min"),
    (["stream.schedule=powerlaw", "stream.rehearsal.p_min=1.5"], "p_min"),
    (["stream.schedule=uniform", "stream.rehearsal.budget_match=false", "stream.rehearsal.uniform_count=0"],
     "uniform_count"),
    (["stream.schedule=uniform", "stream.rehearsal.uniform_count=5"], "uniform_count"),  # ignored when matched
    (["stream.schedule=powerlaw", "stream.rehearsal.match=exposure"], "match"),  # the power law is the reference
    (["stream.schedule=uniform", "stream.rehearsal.budget_match=false", "stream.rehearsal.match=exposure"],
     "match"),  # nothing to match
    (["stream.schedule=exponential", "stream.rehearsal.match=presented"], "match"),
    (["stream.rehearsal.n0=100"], "n0"),  # ignored by the min_proportion form
    (["plugins.replay.capacity=0"], "capacity"),
    (["plugins.detection.window=0"], "window"),
    (["plugins.detection.min_window=50", "plugins.detection.window=30"], "min_window"),  # never fires
    (["plugins.detection.method=welch", "plugins.detection.window=10"], "window"),  # never fires
    (["learner.name=tame"], "presentation"),  # TAME on a task-aware stream
    (["learner.name=ewc", "stream.presentation=task_agnostic"], "presentation"),
    (["learner.name=si", "stream.presentation=task_agnostic"], "presentation"),
    (["plugins.facilitation.window=5", "stream.presentation=task_agnostic"], "presentation"),
    (["learner.name=tame", "stream.presentation=task_agnostic", "plugins.pruning.sparsity=0.5"], "pruning"),
    (["stream.presentation=task_agnostic", "plugins.pruning.when=task_end"], "when"),
    (["plugins.detection.source=learner"], "source"),
    (["stream.scenario=task_incremental"], "scenario"),  # permuted tasks share one label space: ignored
    (["stream.name=binary_pairs", "stream.pixels=unit"], "pixels"),  # frozen features: no pixels to rescale
    (["stream.name=binary_pairs", "stream.pad=2"], "pad"),  # nor images to pad
    (["stream.pad=-1"], "pad"),
    (["stream.pad=1.5"], "pad"),
    (["stream.name=split", "stream.max_angle=90"], "max_angle"),  # finetune reports no shifts: no events, silently
    (["trainer.accelerator=gpu"], "accelerator"),  # no GPU on this machine
    (["trainer.precision=16-bit"], "precision"),
    (["trainer.precision=16-mixed"], "precision"),  # CPU: Lightning would silently train in bf16-mixed
    (["trainer.strategy=deepspeed"], "strategy"),
    (["trainer.devices=[0,1]"], "devices"),  # CPU processes are counted, not indexed
    (["trainer.strategy=single_device", "trainer.devices=2"], "single_device"),
    (["stream.order=[0,0]"], "order"),
    (["stream.options.episodes=5"], "stream.options"),  # permuted takes no options: they would be ignored
    (["model.options.width=64"], "model.options"),
    (["stream.name=metaworld", "stream.val_fraction=0.1"], "val_fraction"),
    (["seed=4294967296"], "seed"),
    (["trainer.eval_init=false", "stream.val_fraction=0.1"], "eval_init"),  # selection's stall guard needs b_j
    # the classes met so far: a split stream's key, Class-IL only, known from task boundaries, through our logits
    (["stream.active_classes=seen"], "active_classes"),  # permuted streams do not read it
    (["stream.active_classes=every"], "active_classes"),
    (["stream.name=split", "stream.scenario=task_incremental", "stream.active_classes=seen"], "active_classes"),
    (["stream.name=split", "stream.presentation=task_agnostic", "stream.active_classes=seen"], "active_classes"),
    (["stream.name=split", "learner.name=l2p", "stream.active_classes=seen"], "active_classes"),
]


def test_ranges_and_combinations_from_the_issue(tmp_path, capsys):
    from cltrain.cli import main

    for args, key in COMBINATIONS:
        refused(main, capsys, tmp_path, args, key)


def test_bad_experiment_files_overrides_and_run_folders(tmp_path, capsys):
    from cltrain.cli import main

    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("trainer: [\n")
    (tmp_path / "a_file").write_text("")
    cases = [
        (["fit", str(tmp_path / "list.yaml")], "a mapping of config keys"),
        (["fit", str(tmp_path / "broken.yaml")], "line 2"),
        (["fit", "bench/pmnist_naive", "=5"], "not key=value"),
        (["fit", "bench/pmnist_naive", f"run_dir={tmp_path / 'a_file'}"], "this is a file"),
        (["fit", "bench/pmnist_naive", f"run_dir={tmp_path / 'a_file' / 'run'}"], "not a writable folder"),
    ]
    for args, expected in cases:
        code = main(args)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and expected in lines[0], (args, err[-2000:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "broken.yaml", "list.yaml"]


@pytest.mark.parametrize("args,key", [
    (["trainer.batch_size=0"], "batch_size"),
    (["learner.name=tame"], "presentation"),
    (["learner.name=tame", "stream.presentation=task_agnostic", "learner.window=0"], "window"),
    (["trainer.accelerator=gpu"], "accelerator"),
    (["plugins.replay.capacity=lots"], "capacity"),
])
def test_the_real_cli_refuses_with_one_line_and_exit_2(tmp_path, args, key):
    run = tmp_path / "run"
    proc = run_cli("fit", "bench/pmnist_naive", *BASE, *args, f"run_dir={run}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("cltrain: error: ") and key in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run.exists()


def test_lightning_names_we_accept_are_lightnings_own():
    """The accepted names are listed without importing Lightning; they must stay names Lightning knows."""
    from lightning_fabric.connector import _PRECISION_INPUT
    from pytorch_lightning.accelerators import AcceleratorRegistry
    from pytorch_lightning.strategies import StrategyRegistry

    from cltrain.config import ACCELERATORS, PRECISIONS, STRATEGIES

    precisions = {str(v) for group in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(group)}
    assert set(PRECISIONS) <= precisions
    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())
    assert set(ACCELERATORS) - {"auto", "gpu"} <= set(AcceleratorRegistry.available_accelerators())


def test_lightnings_own_refusal_is_one_line_exit_2(monkeypatch, tmp_path, capsys):
    """A setting Lightning refuses that the up-front checks did not foresee: still one line, exit 2."""
    import pytorch_lightning as pl

    import cltrain.experiment
    from cltrain.cli import main

    def lightning_refuses(cfg):  # the real Trainer, given a device count Lightning rejects
        pl.Trainer(accelerator="cpu", devices=0, logger=False)

    monkeypatch.setattr(cltrain.experiment, "run_experiment", lightning_refuses)
    code = main(["fit", "bench/pmnist_naive", *BASE, f"run_dir={tmp_path / 'run'}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Lightning refused" in lines[0] and "devices" in lines[0], lines
