"""`cltrain report` aggregates known inputs correctly (hand-written run folders)."""
import csv
import io
import json

import numpy as np
import pytest
import yaml

from cltrain.cli import main
from cltrain.report import csv_text, report


def _fake_run(path, schedule, seed, acc, forgetting):
    path.mkdir(parents=True)
    cfg = {"name": "x", "seed": seed, "run_dir": str(path), "stream": {"schedule": schedule, "n_tasks": 10},
           "logger": {"wandb": {"mode": "offline"}}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.json").write_text(json.dumps({"acc": acc, "bwt": -forgetting, "forgetting": forgetting,
                                                    "wall_time_s": 10.0 + seed}))


def test_report_groups_by_config_and_averages_over_seeds(tmp_path, capsys):
    values = {"powerlaw": [0.90, 0.92, 0.94], "none": [0.70, 0.80]}
    for schedule, accs in values.items():
        for seed, acc in enumerate(accs):
            _fake_run(tmp_path / schedule / f"seed{seed}", schedule, seed, acc, 1 - acc)
    header, rows, groups = report([tmp_path])
    by_label = {row[0]: row for row in rows}
    assert set(by_label) == {"stream.schedule=powerlaw", "stream.schedule=none"}  # labelled by what differs
    pl = by_label["stream.schedule=powerlaw"]
    acc_col = header.index("ACC")
    assert pl[1] == 3
    assert pl[acc_col][0] == pytest.approx(0.92)
    assert pl[acc_col][1] == pytest.approx(np.std([0.90, 0.92, 0.94], ddof=1))
    none = by_label["stream.schedule=none"]
    assert none[acc_col][0] == pytest.approx(0.75) and none[header.index("forgetting")][0] == pytest.approx(0.25)
    parsed = list(csv.DictReader(io.StringIO(csv_text(header, rows))))
    assert float(parsed[0]["ACC mean"]) in (pytest.approx(0.92), pytest.approx(0.75))

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out" / "table")]) == 0
    printed = capsys.readouterr().out
    assert "0.920 ± 0.020" in printed and "0.750 ± 0.071" in printed
    assert (tmp_path / "out" / "table.md").read_text() in printed
    assert (tmp_path / "out" / "table.csv").exists()


def test_report_on_nothing_is_a_clear_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def _tuned_run(path, learner, seed, val_acc, acc):
    path.mkdir(parents=True)
    cfg = {"name": "x", "seed": seed, "run_dir": str(path), "learner": learner, "stream": {"val_fraction": 0.1}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.json").write_text(json.dumps({"acc": acc, "val_acc": val_acc, "forgetting": 0.0}))


def test_select_val_picks_by_validation_never_by_test(tmp_path, capsys):
    # EWC's lam=10 is best on validation, lam=1000 on test: the pick must follow validation.
    grid = {"10": (0.80, 0.60), "100": (0.70, 0.70), "1000": (0.50, 0.90)}  # lam -> (val ACC, test ACC)
    for lam, (val, test) in grid.items():
        for seed in range(3):
            _tuned_run(tmp_path / f"ewc{lam}" / str(seed), {"name": "ewc", "lam": float(lam)}, seed,
                       val + 0.01 * seed, test + 0.01 * seed)
    for c in ("0.1", "1.0"):  # SI: c=1.0 wins on both
        for seed in range(3):
            _tuned_run(tmp_path / f"si{c}" / str(seed), {"name": "si", "c": float(c)}, seed,
                       0.6 if c == "0.1" else 0.65, 0.5 if c == "0.1" else 0.55)
    for seed in range(3):  # no tuned key at all: a method of one grid point
        _tuned_run(tmp_path / "ft" / str(seed), {"name": "finetune"}, seed, 0.4, 0.3)
    out = tmp_path / "sel" / "table"
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam,learner.c",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((tmp_path / "sel" / "table.csv").read_text()))}
    assert set(rows) == {"learner.name=ewc", "learner.name=si", "learner.name=finetune"}
    ewc = rows["learner.name=ewc"]
    assert ewc["picked (by val ACC)"] == "learner.lam=10.0"
    assert float(ewc["ACC mean"]) == pytest.approx(0.61) and float(ewc["val ACC mean"]) == pytest.approx(0.81)
    assert ewc["grid searched"] == "learner.lam ∈ {10.0, 100.0, 1000.0}" and ewc["n"] == "3"
    assert rows["learner.name=si"]["picked (by val ACC)"] == "learner.c=1.0"
    assert float(rows["learner.name=finetune"]["ACC mean"]) == pytest.approx(0.3)
    assert "learner.lam=10.0" in printed and "0.610 ± 0.010" in printed


def test_select_val_refuses_runs_without_validation_and_unknown_keys(tmp_path, capsys):
    _fake_run(tmp_path / "a", "none", 0, 0.5, 0.1)
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "stream.schedule"]) == 2
    assert "no 'val_acc'" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam"]) == 2
    assert "'--tune'" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--select", "val"]) == 2
    assert main(["report", str(tmp_path), "--tune", "learner.lam"]) == 2


def test_tune_seeds_compares_grid_points_on_those_seeds_only(tmp_path, capsys):
    # lam=10 ran on seed 0 only (a grid point), lam=100 on seeds 0-2 (the pick, run on more seeds): lam=100 is
    # worse on seed 0 but its seeds 1, 2 are high, so a mean over all of each point's seeds would pick it.
    _tuned_run(tmp_path / "ewc10" / "0", {"name": "ewc", "lam": 10.0}, 0, 0.80, 0.60)
    for seed, val in enumerate((0.70, 0.95, 0.95)):
        _tuned_run(tmp_path / "ewc100" / str(seed), {"name": "ewc", "lam": 100.0}, seed, val, 0.5)
    out = tmp_path / "sel" / "table"
    base = ["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]
    assert main(base) == 0
    assert next(csv.DictReader(out.with_suffix(".csv").open()))["picked (by val ACC)"] == "learner.lam=100.0"
    assert main([*base, "--tune-seeds", "0"]) == 0
    row = next(csv.DictReader(out.with_suffix(".csv").open()))
    assert row["picked (by val ACC)"] == "learner.lam=10.0" and row["n"] == "1"
    capsys.readouterr()
    assert main([*base, "--tune-seeds", "3"]) == 2  # no grid point ran on seed 3
    assert "'--tune-seeds'" in capsys.readouterr().err
    assert main([*base, "--tune-seeds", "x"]) == 2
    assert main(["report", str(tmp_path), "--tune-seeds", "0"]) == 2  # only with --select val
    assert "only with --select val" in capsys.readouterr().err


def test_tune_seeds_leave_a_method_without_a_grid_to_its_own_seeds(tmp_path, capsys):
    # Fine-tuning has no grid, so nothing is chosen for it: its runs on seeds 1, 2 only are reported as they are,
    # while EWC's two grid points are compared on seed 0.
    for lam, val in ((10.0, 0.8), (100.0, 0.7)):
        _tuned_run(tmp_path / f"ewc{lam}" / "0", {"name": "ewc", "lam": lam}, 0, val, 0.6)
    for seed in (1, 2):
        _tuned_run(tmp_path / "ft" / str(seed), {"name": "finetune"}, seed, 0.4 + 0.1 * seed, 0.3)
    out = tmp_path / "sel" / "table"
    base = ["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]
    assert main([*base, "--tune-seeds", "0"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(out.with_suffix(".csv").open())}
    assert rows["learner.name=ewc"]["picked (by val ACC)"] == "learner.lam=10.0"
    assert rows["learner.name=finetune"]["n"] == "2"
    assert float(rows["learner.name=finetune"]["val ACC mean"]) == pytest.approx(0.55)
    capsys.readouterr()
    assert main([*base, "--tune-seeds", "1"]) == 2  # the grid's points did not run on seed 1
    assert "'--tune-seeds'" in capsys.readouterr().err
    assert main([*base, "--tune-seeds", "0,7"]) == 2  # no run has seed 7: a typo, not a narrower choice
    assert "'7' for '--tune-seeds': no run has that seed" in capsys.readouterr().err


def test_tune_seeds_never_pick_from_a_grid_point_not_run_on_them(tmp_path, capsys):
    # One EWC point so far, run on seed 1 only: it is a grid (a tuned key), so seed 0 compares nothing.
    _tuned_run(tmp_path / "ewc10" / "1", {"name": "ewc", "lam": 10.0}, 1, 0.8, 0.6)
    _tuned_run(tmp_path / "ft" / "0", {"name": "finetune"}, 0, 0.4, 0.3)
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--tune-seeds", "0"]) == 2
    assert "'--tune-seeds'" in capsys.readouterr().err


def test_a_run_made_before_a_key_existed_groups_with_runs_that_have_it_at_its_default(tmp_path, capsys):
    # A grid extended after an upgrade: the old points' config.yaml lacks optim.grad_clip_norm (added later,
    # default null), the new point's has it. They are one method's grid, not two methods.
    _tuned_run(tmp_path / "old", {"name": "ewc", "lam": 10.0}, 0, 0.80, 0.60)
    _tuned_run(tmp_path / "new", {"name": "ewc", "lam": 100.0}, 0, 0.90, 0.70)
    cfg = yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())
    (tmp_path / "new" / "config.yaml").write_text(yaml.safe_dump({**cfg, "optim": {"grad_clip_norm": None}}))
    out = tmp_path / "sel" / "table"
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == 1 and rows[0]["picked (by val ACC)"] == "learner.lam=100.0"
    # a value other than the default still tells the runs apart
    (tmp_path / "new" / "config.yaml").write_text(yaml.safe_dump({**cfg, "optim": {"grad_clip_norm": 2.0}}))
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]) == 0
    assert len(list(csv.DictReader(out.with_suffix(".csv").open()))) == 2


def test_a_run_made_before_a_learner_key_existed_groups_with_runs_that_have_it_at_its_default(tmp_path, capsys):
    # The same for a method's own key: EWC's fisher_labels was added after the old run (default "true").
    _tuned_run(tmp_path / "old", {"name": "ewc", "lam": 10.0}, 0, 0.80, 0.60)
    _tuned_run(tmp_path / "new", {"name": "ewc", "lam": 100.0, "fisher_labels": "true"}, 0, 0.90, 0.70)
    out = tmp_path / "sel" / "table"
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]) == 0
    assert len(list(csv.DictReader(out.with_suffix(".csv").open()))) == 1
    cfg = yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())
    cfg["learner"]["fisher_labels"] = "predicted"  # another value: another method
    (tmp_path / "new" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]) == 0
    assert len(list(csv.DictReader(out.with_suffix(".csv").open()))) == 2


def test_resume_compares_a_run_without_a_newer_learner_key_at_that_keys_default(tmp_path):
    """A run made before EWC had fisher_labels may be resumed (or reused by a reproduction) by the code that
    has it, and is refused if the key now asks for something else."""
    from cltrain.config import load_config, to_yaml
    from cltrain.experiment import resolved_config
    from cltrain.resolve import check_config
    from cltrain.run import config_changes

    def resolved(*keys):
        cfg = load_config("bench/pmnist_ewc", list(keys))
        return resolved_config(cfg, check_config(cfg), str(tmp_path))

    saved = yaml.safe_load(to_yaml(resolved()))
    del saved["learner"]["fisher_labels"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert config_changes(tmp_path / "config.yaml", resolved()) == []
    assert config_changes(tmp_path / "config.yaml", resolved("learner.fisher_labels=predicted")) == [
        "learner.fisher_labels: 'true' -> 'predicted'"]


def _stalling_run(path, lam, seed, val_acc, just_trained):
    """A 2-task run whose second task scores `just_trained` on validation right after its own phase (0.10 before
    any training)."""
    _tuned_run(path, {"name": "ewc", "lam": lam}, seed, val_acc, val_acc)
    metrics = json.loads((path / "metrics.json").read_text())
    metrics.update(val_acc_matrix=[[0.95, 0.10], [0.90, just_trained]], val_acc_init=[0.10, 0.10], order=[0, 1])
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_select_val_never_picks_a_point_that_stopped_learning(tmp_path, capsys):
    # lam=100 has the better validation ACC (old task kept) but its second task stayed at the untrained
    # network's accuracy on seed 1: it froze, so lam=10 is picked and the table says why
    _stalling_run(tmp_path / "a" / "0", 10.0, 0, 0.70, 0.90)
    _stalling_run(tmp_path / "b" / "0", 100.0, 0, 0.80, 0.60)
    _stalling_run(tmp_path / "b" / "1", 100.0, 1, 0.50, 0.10)
    out = tmp_path / "sel" / "table"
    base = ["report", str(tmp_path), "--select", "val", "--tune", "learner.lam", "--out", str(out)]
    assert main([*base, "--tune-seeds", "0"]) == 0
    row = next(csv.DictReader(out.with_suffix(".csv").open()))
    assert row["picked (by val ACC)"] == "learner.lam=10.0"
    assert "stopped learning: learner.lam=100.0" in row["grid searched"]
    # every point frozen: the best is still reported, and flagged
    _stalling_run(tmp_path / "a" / "1", 10.0, 1, 0.60, 0.05)
    assert main([*base, "--tune-seeds", "0"]) == 0
    row = next(csv.DictReader(out.with_suffix(".csv").open()))
    assert row["picked (by val ACC)"] == "learner.lam=100.0 (every point stopped learning)"
    capsys.readouterr()


def _grid_runs(root):
    """EWC's lam in {10, 100, 1000} (validation prefers 10, test 1000), SI's c in {0.1, 1.0}, fine-tuning untuned."""
    grid = {"10": (0.80, 0.60), "100": (0.70, 0.70), "1000": (0.50, 0.90)}
    for lam, (val, test) in grid.items():
        for seed in range(3):
            _tuned_run(root / f"ewc{lam}" / str(seed), {"name": "ewc", "lam": float(lam)}, seed,
                       val + 0.01 * seed, test + 0.01 * seed)
    for c in ("0.1", "1.0"):
        for seed in range(3):
            _tuned_run(root / f"si{c}" / str(seed), {"name": "si", "c": float(c)}, seed,
                       0.6 if c == "0.1" else 0.65, 0.5 if c == "0.1" else 0.55)
    for seed in range(3):
        _tuned_run(root / "ft" / str(seed), {"name": "finetune"}, seed, 0.4, 0.3)


def test_plot_draws_each_tuned_grid_its_pick_and_the_test_acc_it_did_not_use(tmp_path, capsys):
    from cltrain.plots import selection_figure
    from cltrain.report import find_runs, group_runs
    from cltrain.selection import grid_curves, select

    _grid_runs(tmp_path / "runs")
    curves = grid_curves(select(group_runs(find_runs([tmp_path / "runs"])), ["learner.lam", "learner.c"]))
    ewc, si = sorted(curves, key=lambda c: c.method)  # fine-tuning has no grid: no panel
    assert (ewc.method, ewc.key, ewc.x) == ("ewc", "learner.lam", [10.0, 100.0, 1000.0])
    assert ewc.val == pytest.approx([0.81, 0.71, 0.51]) and ewc.test == pytest.approx([0.61, 0.71, 0.91])
    assert ewc.chosen == 0 and ewc.chosen_test[0] == pytest.approx(0.61) and ewc.n_chosen == 3
    assert ewc.log_x and not si.log_x  # two decades read on a log axis, one step of 10x not
    assert si.chosen == 1 and si.labels == ["0.1", "1.0"]
    fig = selection_figure(curves, reference={"ewc": (70.0, 1.0)})
    panels = {ax.get_title().split(";")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert sorted(panels) == ["ewc", "si"]
    val_line = panels["ewc"].get_lines()[0]
    assert list(val_line.get_xdata()) == [10.0, 100.0, 1000.0]
    assert list(val_line.get_ydata()) == pytest.approx([81.0, 71.0, 51.0])
    assert panels["ewc"].get_xscale() == "log" and panels["si"].get_xscale() == "linear"
    assert any(line.get_ydata()[0] == 70.0 for line in panels["ewc"].get_lines())  # the reference line, EWC only
    assert not any(line.get_ydata()[0] == 70.0 for line in panels["si"].get_lines())

    out = tmp_path / "figs" / "grid.png"
    assert main(["report", str(tmp_path / "runs"), "--select", "val", "--tune", "learner.lam,learner.c",
                 "--plot", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_marks_a_point_that_stopped_learning(tmp_path):
    from cltrain.report import find_runs, group_runs
    from cltrain.selection import grid_curves, select

    _stalling_run(tmp_path / "a" / "0", 10.0, 0, 0.70, 0.90)
    _stalling_run(tmp_path / "b" / "0", 100.0, 0, 0.80, 0.10)
    (curve,) = grid_curves(select(group_runs(find_runs([tmp_path])), ["learner.lam"]))
    assert curve.stalled == [False, True] and curve.chosen == 0  # the better val score froze: not picked


@pytest.mark.parametrize("extra, message", [
    (["--plot", "grid.png"], "only with --select val"),
    (["--select", "val", "--tune", "learner.lam", "--plot", "grid.txt"], "ending in .png, .pdf, .svg"),
])
def test_plot_refuses_a_path_it_cannot_write_or_would_ignore(tmp_path, capsys, extra, message):
    _grid_runs(tmp_path / "runs")
    extra = [str(tmp_path / a) if a.startswith("grid") else a for a in extra]
    assert main(["report", str(tmp_path / "runs"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("grid*"))


def test_plot_of_runs_without_a_grid_is_refused_before_anything_is_written(tmp_path, capsys):
    for seed in range(2):
        _tuned_run(tmp_path / "runs" / f"ewc{seed}", {"name": "ewc", "lam": 10.0}, seed, 0.8, 0.7)
    plot = tmp_path / "grid.png"
    assert main(["report", str(tmp_path / "runs"), "--select", "val", "--tune", "learner.lam",
                 "--plot", str(plot)]) == 2
    captured = capsys.readouterr()
    assert "two or more grid points" in captured.err and not captured.out and not plot.exists()


def test_plot_of_a_grid_over_two_keys_names_each_point_on_a_category_axis(tmp_path):
    from cltrain.plots import selection_figure
    from cltrain.report import find_runs, group_runs
    from cltrain.selection import grid_curves, select

    points = {(10.0, 0.9): 0.7, (10.0, 1.0): 0.8, (100.0, 0.9): 0.75}
    for (lam, gamma), val in points.items():
        _tuned_run(tmp_path / f"{lam}_{gamma}", {"name": "ewc", "lam": lam, "gamma": gamma}, 0, val, val)
    (curve,) = grid_curves(select(group_runs(find_runs([tmp_path])), ["learner.lam", "learner.gamma"]))
    assert curve.x is None and not curve.log_x
    assert curve.key == "learner.gamma, learner.lam"  # the x label names the keys in the labels' order
    assert curve.labels == ["0.9, 10.0", "0.9, 100.0", "1.0, 10.0"] and curve.labels[curve.chosen] == "1.0, 10.0"
    (ax,) = [ax for ax in selection_figure([curve]).axes if ax.get_visible()]
    assert [t.get_text() for t in ax.get_xticklabels()] == curve.labels
