"""The commands beside `fit` (report, sweep, keep, ibcl-model) on paths they cannot use and records that no
longer parse: one line naming the path and what is valid, exit 2, no traceback, nothing written (hand-made
run folders; `cltrain report` on real runs: tests/test_keep.py, tests/test_report.py)."""
import json

import pytest
import yaml

from cltrain.cli import main


def _run(path, acc=0.9, seed=0):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"name": "x", "seed": seed, "run_dir": str(path)}))
    (path / "metrics.json").write_text(json.dumps({"acc": acc}))
    return path


def _one_line(capsys, args):
    code = main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (args, code, lines)
    return lines[0]


def test_outputs_under_a_file_are_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs / "a")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = _one_line(capsys, ["report", str(runs), "--out", str(blocker / "table")])
    assert "cannot use" in line and "a_file" in line  # _one_line: exactly one stderr line, so no traceback
    assert "cannot use" in _one_line(capsys, ["keep", str(runs), "--to", str(blocker / "kept")])
    assert blocker.read_text() == ""


def test_records_cut_short_are_named(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs / "a")
    broken = _run(runs / "b")
    (broken / "metrics.json").write_text('{"acc": 0.9, "bw')
    assert "b/metrics.json is not valid JSON" in _one_line(capsys, ["report", str(runs)])
    assert "b/metrics.json is not valid JSON" in _one_line(capsys, ["keep", str(runs), "--to", str(tmp_path / "k")])
    assert not (tmp_path / "k").exists()  # nothing kept when one record is refused
    (broken / "metrics.json").write_text(json.dumps({"acc": 0.8}))
    (broken / "config.yaml").write_text("seed: [unclosed\n")
    assert "b/config.yaml is not valid YAML" in _one_line(capsys, ["report", str(runs)])
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text('{"experiment": ')
    assert "sweep.json is not valid JSON" in _one_line(capsys, ["sweep", "--status", str(sweep)])


def test_two_runs_kept_under_one_name_are_refused(tmp_path, capsys):
    first, second = _run(tmp_path / "x" / "r1", 0.9), _run(tmp_path / "y" / "r1", 0.5)
    line = _one_line(capsys, ["keep", str(first), str(second), "--to", str(tmp_path / "k")])
    assert "would both be kept as" in line and not (tmp_path / "k").exists()


def test_a_slurm_sweep_without_sbatch_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # this machine has SLURM: a PATH without sbatch stands for one without
    root = tmp_path / "sweep"
    line = _one_line(capsys, ["sweep", "bench/pmnist_naive", "seed=0,1", f"run_dir={root}", "--launcher", "slurm"])
    assert "sbatch" in line and "--launcher local" in line
    assert not root.exists()


@pytest.mark.parametrize("out", ["model.json", "no_such_folder/model.pt2", "."])
def test_ibcl_model_out_must_be_a_pt2_file_in_a_folder_that_exists(tmp_path, capsys, monkeypatch, out):
    """A .json --out was overwritten by the model's own record (<out>.json) after the model was written."""
    monkeypatch.chdir(tmp_path)
    line = _one_line(capsys, ["ibcl-model", str(tmp_path), "--preference", "1", "--out", out])
    assert "'--out'" in line and ".pt2" in line


def test_ibcl_model_seed_in_range(tmp_path, capsys):
    assert "'--seed'" in _one_line(capsys, ["ibcl-model", str(tmp_path), "--preference", "1", "--seed", "-1"])


def test_report_and_sweep_lists_with_an_empty_or_repeated_item_are_refused(tmp_path, capsys):
    """Values that were silently dropped or overridden: '0,,1' read as 0,1; seed=0,1 seed=2 ran seed 2 twice."""
    runs = tmp_path / "runs"
    _run(runs / "a")
    for option, value in (("--tune-seeds", "0,,1"), ("--tune-seeds", "0,0"), ("--tune", "learner.lam,"),
                          ("--tune", "learner.lam,learner.lam")):
        extra = ["--tune", "learner.lam"] if option == "--tune-seeds" else []
        line = _one_line(capsys, ["report", str(runs), "--select", "val", *extra, option, value])
        assert f"'{option}'" in line and repr(value) in line
    root = tmp_path / "sweep"
    line = _one_line(capsys, ["sweep", "bench/pmnist_naive", "seed=0,1", "seed=2", f"run_dir={root}", "--dry-run"])
    assert "sets the swept key 'seed' again" in line and not root.exists()


@pytest.mark.parametrize("args", [["report"], ["report", "x", "--select", "test"], ["bogus"], ["keep", "x"],
                                  ["report", "x", "--selct", "val"]])
def test_usage_errors_are_one_line_naming_the_help(args, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and "--help)" in lines[0], lines
