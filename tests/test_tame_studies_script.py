"""scripts/tame_studies.py's gap studies: one factor toward the paper at a time at the shipped scale, each factor's
run paired with the reference's run of the same seed (hand-written run folders; TAME's metrics themselves are
tested on real runs in tests/test_tame.py)."""
import json

import pytest

from conftest import load_script


def script():
    return load_script("tame_studies")


def _run(root, name, acc, missed=0, lenient=0.01):
    """A finished TAME run folder with the fields the gap section reads."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "metrics.json").write_text(json.dumps({
        "acc": acc, "lenient_acc": acc + lenient, "per_task_acc_before_prune": [0.99, 0.97],
        "per_task_acc_after_prune": [0.98, 0.96], "pruning_loss": 0.01, "expert_drift_after_pruning": 0.0,
        "routing_loss": 0.98 - 0.01 - acc, "nonzero_params": 38080, "tame_detection_missed": missed,
        "wall_time_s": 100.0}))


def test_gap_runs_go_seed_by_seed_with_each_factors_overrides():
    ts = script()
    runs = ts.STUDIES["gap_split"][0]([0, 1])
    factors = ts.GAPS["gap_split"].factors
    assert len(runs) == 2 * (1 + len(factors))
    first_seed = runs[:1 + len(factors)]
    assert all(extra[-1] == "seed=0" for _, _, extra in first_seed)  # a study cut short keeps whole seeds
    name, experiment, extra = first_seed[0]
    assert (name, experiment, extra) == ("gap_split_ref_s0", "tame/split_mnist", ["seed=0"])
    label, overrides = next(iter(factors.items()))
    assert first_seed[1] == (ts.gap_run_name("gap_split", label, 0), "tame/split_mnist", [*overrides, "seed=0"])
    assert "learner.selector_epochs=200" in overrides


def test_gap_section_pairs_seeds_where_both_runs_found_every_shift(tmp_path):
    ts = script()
    labels = list(ts.GAPS["gap_pmnist"].factors)
    _run(tmp_path, "gap_pmnist_ref_s0", 0.86)
    _run(tmp_path, "gap_pmnist_ref_s1", 0.87)
    _run(tmp_path, ts.gap_run_name("gap_pmnist", labels[0], 0), 0.88)
    _run(tmp_path, ts.gap_run_name("gap_pmnist", labels[0], 1), 0.40, missed=1)  # merged two tasks: not paired
    lines = ts.STUDIES["gap_pmnist"][1](tmp_path, [0, 1])
    table = [line for line in lines if line.startswith("|")]
    assert {line.count("|") for line in table} == {14}  # header, rule and every row: 13 cells
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table[2:]}
    assert rows["reference"][:3] == ["2", "86.50 ± 0.71", "—"]
    assert rows[labels[0]][:3] == ["2", "64.00 ± 33.94", "+2.00 (1)"]  # seed 0 only: 88 - 86
    assert rows[labels[0]][10] == "0, 1"  # missed shifts per seed
    assert rows[labels[1]] == ["not run"] + [""] * 11
    text = "\n".join(lines)
    # the losses the fixture gives both runs are equal: ACC's change is all routing
    assert (f"- {labels[0]}: ACC +2.00 (dense expert +0.00, pruning loss +0.00, drift after pruning +0.00, "
            "routing loss -2.00) points, paired over 1 seed.") in text
    assert "87.50 ± 0.71 % (ACC 86.50 ± 0.71 %)" in text  # lenient differs from ACC: shown
    assert "scripts/tame_studies.py gap_pmnist" in text


def test_gap_section_leaves_out_the_lenient_line_where_it_equals_acc(tmp_path):
    ts = script()
    _run(tmp_path, "gap_pmnist_ref_s0", 0.86, lenient=0.0)  # permuted MNIST: every task has the same classes
    text = "\n".join(ts.STUDIES["gap_pmnist"][1](tmp_path, [0]))
    assert "86.00" in text and "paper's code's metric (lenient" not in text


def test_a_studys_scale_reaches_every_run_and_its_text():
    ts = script()
    runs = ts.STUDIES["gap_pmnist20"][0]([0])
    assert runs and all(extra[0] == "stream.n_tasks=20" for _, _, extra in runs)
    assert "`tame/pmnist` as shipped with `stream.n_tasks=20`" in "\n".join(ts.STUDIES["gap_pmnist20"][1](
        ts.Path("/nonexistent"), [0]))


def test_the_stability_tables_read_records_so_kept_runs_need_no_checkpoint(tmp_path, monkeypatch):
    """A real EWC run: its `fisher_peaks` record gives lr·λ·ΣF_max exactly as its checkpoint does; kept with
    --logs (no checkpoint), the TAME page's stability table and logged-loss lines read the same numbers."""
    from cltrain.keep import keep
    from conftest import QUICK, run_cli

    runs = tmp_path / "runs"
    run = runs / "pmnist3_ewc"
    done = run_cli("fit", "tame/pmnist_ewc", *QUICK, "trainer.steps_per_task=40", f"run_dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    stiffness = load_script("ewc_stiffness")
    from_checkpoint = [v for v, _ in stiffness.stiffness(run, 0.02, 10)]
    assert len(from_checkpoint) == 3 and from_checkpoint[0] > 0
    assert stiffness.products(run, 0.02, 10) == pytest.approx(from_checkpoint, rel=1e-6)

    kept = tmp_path / "kept"
    keep([runs], kept, logs=True)
    copy = kept / "pmnist3_ewc"
    assert not (copy / "checkpoints").exists()
    assert stiffness.products(copy, 0.02, 10) == pytest.approx(from_checkpoint, rel=1e-6)
    ts = script()
    monkeypatch.setattr(ts, "STABILITY_CHECKS", {"pmnist3_ewc": ("tame/pmnist_ewc", [])})
    row = next(line for line in ts.stability_checks(kept) if line.startswith("| pmnist3_ewc |"))
    assert ", ".join(f"{v:.2f}" for v in from_checkpoint) in row
    rt = load_script("reproduce_tame")
    logged = rt._logged(runs, "pmnist3_ewc", "train/loss")
    assert logged and rt._logged(kept, "pmnist3_ewc", "train/loss") == logged


@pytest.mark.parametrize("script_name, args", [("tame_studies.py", ["baselines"]), ("reproduce_tame.py", [])])
def test_a_tame_page_is_never_rewritten_from_no_runs(tmp_path, script_name, args):
    import subprocess
    import sys

    from conftest import REPO

    page = tmp_path / "tame.md"
    page.write_text("the committed results\n")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script_name), *args, "--no-run", "--runs",
                           str(tmp_path / "tame_runs"), "--doc", str(page)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "are not finished under" in done.stderr and "--keep docs/results/runs/tame_runs " in done.stderr
    assert page.read_text() == "the committed results\n"


def test_logged_curves_join_a_resumed_runs_log_versions(tmp_path):
    """A run resumed after a kill logs into version_1 (and version_10 sorts before version_2 as text): the page's
    loss curves read every version, by number, the resumed value winning a step logged twice."""
    rt = load_script("reproduce_tame")
    for version, rows in ((0, [(49, 2.3), (99, 1.0)]), (1, [(99, 0.9), (149, 0.5)]), (10, [(199, 0.2)]),
                          (2, [(149, 0.4)])):
        log = tmp_path / "run" / "logs" / f"version_{version}" / "metrics.csv"
        log.parent.mkdir(parents=True)
        log.write_text("epoch,step,train/loss\n" + "".join(f"0,{s},{v}\n" for s, v in rows))
    assert rt._logged(tmp_path, "run", "train/loss") == [(49, 2.3), (99, 0.9), (149, 0.4), (199, 0.2)]


def test_a_studys_hand_written_notes_close_its_section(tmp_path, monkeypatch):
    """docs/results/tame_<study>_notes.md is appended to that study's section (the baselines study's too), and a
    study without one gets none."""
    ts = script()
    monkeypatch.setattr(ts, "REPO", tmp_path)
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "tame_baselines_notes.md").write_text("### Reading\n\nby hand\n")
    section = ts.baselines_section(tmp_path / "runs", [0])
    assert section[-2:] == ["", "### Reading\n\nby hand"]
    assert section[0].startswith("## Baselines for the comparison")
    assert ts.hand_notes("gap_split") == []
