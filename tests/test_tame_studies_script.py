"""scripts/tame_studies.py's gap studies: one factor toward the paper at a time at the shipped scale, each factor's
run paired with the reference's run of the same seed (hand-written run folders; TAME's metrics themselves are
tested on real runs in tests/test_tame.py)."""
import json

from conftest import load_script


def script():
    return load_script("tame_studies")


def _run(root, name, acc, missed=0):
    """A finished TAME run folder with the fields the gap section reads."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "metrics.json").write_text(json.dumps({
        "acc": acc, "lenient_acc": acc + 0.01, "per_task_acc_before_prune": [0.99, 0.97],
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
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines
            if line.startswith("| ") and not line.startswith("| factor")}
    assert rows["reference"][:3] == ["2", "86.50 ± 0.71", "—"]
    assert rows[labels[0]][:3] == ["2", "64.00 ± 33.94", "+2.00 (1)"]  # seed 0 only: 88 - 86
    assert rows[labels[0]][10] == "0, 1"  # missed shifts per seed
    assert rows[labels[1]] == ["not run"] + [""] * 11
    text = "\n".join(lines)
    assert f"- {labels[0]}: ACC +2.00, pruning loss +0.00, routing loss -2.00 points, paired over 1 seed." in text
    assert "86.50 ± 0.71 % (ACC 86.50 ± 0.71 %)" not in text and "87.50 ± 0.71 % (ACC 86.50 ± 0.71 %)" in text
    assert "scripts/tame_studies.py gap_pmnist" in text
