"""Reproducibility: same seed -> same metrics; a SIGKILLed run resumed from its checkpoint ends identically."""
import signal

import yaml
from conftest import QUICK, kill_after, results, run_cli

# SI (learner state), replay (plugin state, its own RNG), SGD momentum (optimizer state) and the validation
# matrix (stream.val_fraction) all must survive.
JOB = ("fit", "bench/pmnist_si", *QUICK, "stream.n_tasks=4", "stream.train_per_task=4000",
       "trainer.epochs_per_task=2", "plugins.replay.capacity=300", "stream.val_fraction=0.1")
_metrics = results


def test_same_seed_twice_gives_identical_metrics(tmp_path):
    for name in ("a", "b"):
        assert run_cli(*JOB, f"run_dir={tmp_path / name}").returncode == 0
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert run_cli(*JOB, "seed=1", f"run_dir={tmp_path / 'c'}").returncode == 0
    assert _metrics(tmp_path / "c")["acc_matrix"] != _metrics(tmp_path / "a")["acc_matrix"]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli(*JOB, f"run_dir={full}").returncode == 0

    code = kill_after([*JOB, f"run_dir={killed}"], "phase 1/4")
    assert code == -signal.SIGKILL
    assert (killed / "checkpoints" / "last.pt").exists()
    assert not (killed / "metrics.json").exists(), "the run finished before the kill; the test proves nothing"

    changed = run_cli(*JOB, f"run_dir={killed}", "resume=true", "stream.pixels=unit")
    assert changed.returncode == 2 and "stream.pixels: 'standardised' -> 'unit'" in changed.stderr, changed.stderr
    # As if the run had been made before stream.pixels existed: its config.yaml lacks the key, and it resumes.
    saved = yaml.safe_load((killed / "config.yaml").read_text())
    del saved["stream"]["pixels"]
    (killed / "config.yaml").write_text(yaml.safe_dump(saved))
    resumed = run_cli(*JOB, f"run_dir={killed}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "phase 1/4" not in resumed.stdout  # finished phases are not trained again
    assert _metrics(killed) == _metrics(full)
    assert len(_metrics(full)["val_acc_matrix"]) == 4
