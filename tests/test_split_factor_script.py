"""scripts/split_factor.py: its runs are the baselines page's grid points run with the page's values and with one
stream key changed, the page's-values side shared by every factor, and its pages pair each seed's two runs
(hand-written run folders; the streams themselves are tested on real MNIST in tests/test_streams.py)."""
import json
from types import SimpleNamespace

import pytest

from conftest import load_script


def script():
    return load_script("split_factor")


def test_jobs_run_each_pick_both_ways_with_the_pages_run_names(tmp_path):
    sf = script()
    jobs = sf.jobs(sf.FACTORS["class_order"], SimpleNamespace(seeds=[1, 2], scenarios=["domain_incremental"]),
                   tmp_path)
    assert len(jobs) == 2 * 5 * 2  # seeds x (4 picks + joint) x sides
    dirs = {job[5].relative_to(tmp_path).as_posix(): job for job in jobs}
    assert dirs["domain_incremental/class_order-shuffled/joint_s1"][3] == ["learner.name=joint"]
    ewc = dirs["domain_incremental/class_order-shuffled/ewc_1e7_s2"]
    assert ewc[3] == ["learner.name=ewc", "learner.mode=offline", "learner.lam=1e7"] and ewc[4] == 2
    # the picks' inputs on both sides (the baselines yaml has since moved to [0, 1])
    assert ewc[6] == ("stream.pixels=standardised", "stream.class_order=shuffled") and ewc[2] == 2000
    assert dirs["domain_incremental/reference/ewc_1e7_s2"][6] == ("stream.pixels=standardised",)
    with pytest.raises(ValueError, match="not a grid point"):
        sf.grid_point("SI", "3.0")


def test_factors_share_the_reference_runs(tmp_path):
    sf = script()
    args = SimpleNamespace(seeds=[1], scenarios=list(sf.PICKS))
    by_factor = {name: {job[5]: job[6] for job in sf.jobs(factor, args, tmp_path)}
                 for name, factor in sf.FACTORS.items()}
    reference = [{d for d, extra in jobs.items() if d.parent.name == "reference"} for jobs in by_factor.values()]
    # the pixel factor's reference runs are the class-order factor's, which also runs joint (its `plain` method)
    assert reference[1] < reference[0] and len(reference[1]) == 3 * 4
    assert {d.name for d in reference[0] - reference[1]} == {"joint_s1"} and len(reference[0]) == 3 * 5
    assert {by_factor["pixels"][d] for d in reference[1]} == {("stream.pixels=standardised",)}
    unit = {d: extra for d, extra in by_factor["pixels"].items() if d.parent.name != "reference"}
    assert set(unit.values()) == {("stream.pixels=unit",)}
    assert all(d.parent.name == "pixels-unit" for d in unit)
    # the classes-met factor runs where the key applies, Class-IL, on the same reference runs (joint's too)
    seen = by_factor["active_classes"]
    class_il = {d for d in reference[0] if d.parts[-3] == "class_incremental"}
    assert {d for d in seen if d.parent.name == "reference"} == class_il
    assert {d.parts[-3] for d in seen} == {"class_incremental"} and len(seen) == 2 * 5
    assert {extra for d, extra in seen.items() if d.parent.name != "reference"} == {
        ("stream.pixels=standardised", "stream.active_classes=seen")}


def test_a_factor_refuses_scenarios_where_its_key_does_not_apply(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "scripts/split_factor.py", "active_classes", "--scenarios",
                           "task_incremental", "--doc-only", "--runs", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "applies to class_incremental only" in proc.stderr, proc.stderr


def _metrics(path, acc):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"acc": acc}))


def test_rows_pair_seeds_and_skip_unfinished(tmp_path):
    sf = script()
    factor = sf.FACTORS["pixels"]
    base = tmp_path / "task_incremental"
    _metrics(base / "reference" / "si_0.5_s1", 0.99)
    _metrics(base / "pixels-unit" / "si_0.5_s1", 0.97)
    _metrics(base / "reference" / "si_0.5_s2", 0.98)
    _metrics(base / "pixels-unit" / "si_0.5_s2", 0.98)
    _metrics(base / "reference" / "si_0.5_s3", 0.50)  # its unit-pixel partner has not finished: left out
    _metrics(base / "class_order-shuffled" / "si_0.5_s3", 0.10)  # another factor's run: never read here
    row = sf.row(factor, tmp_path, "task_incremental", "SI", "0.5", [1, 2, 3])
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2] == "1, 2"
    assert cells[3] == "98.5 ± 0.7" and cells[4] == "97.5 ± 0.7"
    assert cells[5] == "-1.0 [-2.0, +0.0]"
    assert cells[6] == "99.0 → 97.0, 98.0 → 98.0"
    assert cells[9] == "99.14 ± 0.49"  # the paper's SI, SEM x sqrt(20)
    assert sf.row(factor, tmp_path, "task_incremental", "EWC", "1e9", [1, 2, 3]) is None


def test_page_shows_every_finished_pair_with_the_commands_that_made_them(tmp_path):
    sf = script()
    runs, out = tmp_path / "runs", tmp_path / "page.md"
    for seed in (1, 2):
        _metrics(runs / "task_incremental" / "reference" / f"si_0.5_s{seed}", 0.99)
        _metrics(runs / "task_incremental" / "class_order-shuffled" / f"si_0.5_s{seed}", 0.97)
    _metrics(runs / "task_incremental" / "reference" / "si_0.5_s3", 0.99)  # no partner: not on the page
    _metrics(runs / "task_incremental" / "pixels-unit" / "si_0.5_s3", 0.5)  # another factor's partner
    _metrics(runs / "class_incremental" / "reference" / "finetuning_s1", 0.2)
    _metrics(runs / "class_incremental" / "class_order-shuffled" / "finetuning_s1", 0.25)
    _metrics(runs / "class_incremental" / "reference" / "joint_s1", 0.975)  # the factor's plain method
    _metrics(runs / "class_incremental" / "class_order-shuffled" / "joint_s1", 0.965)
    _metrics(runs / "task_incremental" / "pixels-unit" / "joint_s1", 0.5)  # no pixel page runs joint
    _metrics(runs / "task_incremental" / "reference" / "joint_s1", 0.5)
    (tmp_path / "page_notes.md").write_text("## Reading the table\n\nhand-written\n")
    sf.write_doc(sf.FACTORS["class_order"], "class_order", runs, out)
    page = out.read_text()
    assert ("`CLTRAIN_DATA=<data> python scripts/split_factor.py class_order --seeds 1 2 --scenarios task_incremental` "
            "and `CLTRAIN_DATA=<data> python scripts/split_factor.py class_order --seeds 1 --scenarios "
            "class_incremental`") in page
    assert "({0,1}, {2,3}, …" in page and "seed 2: {" in page and "seed 3: {" not in page  # the seeds' own pairs
    assert "## Domain-IL" not in page  # no finished pair there
    assert "| label order | shuffled pairs | shift |" in page
    assert "| SI | 0.5 | 1, 2 | 99.0 ± 0.0 | 97.0 ± 0.0 | -2.0 [-2.0, -2.0] |" in page
    assert "| fine-tuning | — | 1 | 20.0 ± 0.0 | 25.0 ± 0.0 | +5.0 [+5.0, +5.0] |" in page
    assert "| joint | — | 1 | 97.5 ± 0.0 | 96.5 ± 0.0 | -1.0 [-1.0, -1.0] |" in page
    assert "(joint: no setting to pick; the page's one run per seed)" in page
    assert page.index("| fine-tuning | — | 1 | 20.0") < page.index("| joint | — | 1 |")  # after the picks
    assert page.index("## Task-IL") < page.index("## Class-IL") and page.endswith("hand-written\n")
    assert sf.finished_seeds(sf.FACTORS["pixels"], runs, "task_incremental") == [3]  # not joint's seed 1
