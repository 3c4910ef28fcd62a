"""trainer.eval_init=false: no evaluation of the untrained network, so no b_j and no forward transfer; every other
figure is the run's own, unchanged (real MNIST, real CLI processes)."""
import csv
import json

from conftest import QUICK, kill_after, results, run_cli

JOB = ("fit", "bench/pmnist_naive", *QUICK)


def test_without_the_untrained_evaluation_only_fwt_and_the_init_row_go(tmp_path):
    full, lean = tmp_path / "full", tmp_path / "lean"
    assert run_cli(*JOB, f"run_dir={full}").returncode == 0
    done = run_cli(*JOB, "trainer.eval_init=false", f"run_dir={lean}")
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = results(full), results(lean)
    assert a["acc_init"] is not None and a["fwt"] is not None  # the default scores the untrained network
    assert b["acc_init"] is None and b["fwt"] is None  # strict JSON null: undefined, not NaN or 0
    # the untrained evaluation draws no randomness and changes no weights: the rest is the same run
    same = {k: v for k, v in a.items() if k not in ("acc_init", "fwt", "warnings")}
    assert same == {k: v for k, v in b.items() if k in same}
    assert "FWT n/a" in done.stdout
    rows = list(csv.reader((lean / "metrics.csv").open()))
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]  # no "init" row
    assert [r[0] for r in csv.reader((full / "metrics.csv").open())][1] == "init"
    report = run_cli("report", str(lean))
    assert report.returncode == 0 and "FWT" in report.stdout and "—" in report.stdout, report.stderr[-2000:]


def test_a_resumed_run_does_not_evaluate_the_untrained_network_either(tmp_path):
    run = tmp_path / "run"
    args = [*JOB, "trainer.eval_init=false", f"run_dir={run}"]
    assert kill_after(args, "phase 1/3") != 0
    assert not (run / "metrics.json").exists()  # killed before the end: the resume below has work to do
    assert run_cli(*args, "resume=true").returncode == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["acc_init"] is None and metrics["fwt"] is None and len(metrics["acc_matrix"]) == 3
