"""scripts/fisher_labels.py must read the rows a run's EWC read, or its comparison of Fisher estimates means
nothing: on a real (short) offline-EWC run it recomputes the stored Fisher exactly, and the arg-max labels give
another one."""
import sys

from conftest import load_script


def script():
    return load_script("fisher_labels")


def test_recomputes_the_runs_fisher_and_the_predicted_one_differs(tmp_path, capsys, monkeypatch):
    from cltrain.cli import main

    run = tmp_path / "ewc"
    assert main(["fit", "bench/pmnist_ewc", "stream.n_tasks=2", "trainer.steps_per_task=20",
                 "stream.train_per_task=600", "stream.test_per_task=100", "learner.fisher_samples=200",
                 f"run_dir={run}"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["fisher_labels.py", str(run), "--tail", "1"])
    script().main()
    lines = capsys.readouterr().out.splitlines()
    rows, tail = [line.split() for line in lines[1:-1]], lines[-1]
    assert [r[0] for r in rows] == ["0", "1"]
    for task, acc, stored, ours, true_all, predicted_all, ratio in rows:
        assert stored == ours, task  # the same rows, the same network: the same Fisher
        assert 0 < float(acc) < 1  # some labels disagree with the arg-max ...
        assert float(predicted_all) != float(true_all)  # ... so the two estimates differ
        assert abs(float(ratio) - float(predicted_all) / float(true_all)) < 1e-3
    # the per-image totals average to the Fisher's total over every image: the tail describes that Fisher
    mean = float(tail.split("mean ")[1].split(",")[0])
    assert abs(mean - float(rows[1][4])) <= 1e-3 * float(rows[1][4]), tail
