"""scripts/class_order.py: its runs are the baselines page's grid points run both ways, and its page pairs each
label-order run with the shuffled run of the same seed (hand-written run folders; the stream itself is tested on
real MNIST in tests/test_streams.py)."""
import json
from types import SimpleNamespace

import pytest

from conftest import load_script


def script():
    return load_script("class_order")


def test_jobs_run_each_pick_both_ways_with_the_pages_run_names(tmp_path):
    co = script()
    jobs = co.jobs(SimpleNamespace(seeds=[1, 2], scenarios=["domain_incremental"]), tmp_path)
    assert len(jobs) == 2 * 4 * 2  # seeds x methods x orders
    dirs = {job[5].relative_to(tmp_path).as_posix(): job for job in jobs}
    ewc = dirs["domain_incremental/shuffled/ewc_1e7_s2"]
    assert ewc[3] == ["learner.name=ewc", "learner.mode=offline", "learner.lam=1e7"] and ewc[4] == 2
    assert ewc[6] == ("stream.class_order=shuffled",) and ewc[2] == 2000
    assert dirs["domain_incremental/natural/ewc_1e7_s2"][6] == ("stream.class_order=natural",)
    with pytest.raises(ValueError, match="not a grid point"):
        co.grid_point("SI", "3.0")


def _metrics(path, acc):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"acc": acc}))


def test_rows_pair_seeds_and_skip_unfinished(tmp_path):
    co = script()
    base = tmp_path / "task_incremental"
    _metrics(base / "natural" / "si_0.5_s1", 0.99)
    _metrics(base / "shuffled" / "si_0.5_s1", 0.97)
    _metrics(base / "natural" / "si_0.5_s2", 0.98)
    _metrics(base / "shuffled" / "si_0.5_s2", 0.98)
    _metrics(base / "natural" / "si_0.5_s3", 0.50)  # its shuffled partner has not finished: left out
    row = co.row(tmp_path, "task_incremental", "SI", "0.5", [1, 2, 3])
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2] == "1, 2"
    assert cells[3] == "98.5 ± 0.7" and cells[4] == "97.5 ± 0.7"
    assert cells[5] == "-1.0 [-2.0, +0.0]"
    assert cells[6] == "99.0 → 97.0, 98.0 → 98.0"
    assert cells[9] == "99.14 ± 0.49"  # the paper's SI, SEM x sqrt(20)
    assert co.row(tmp_path, "task_incremental", "EWC", "1e9", [1, 2, 3]) is None
