"""scripts/gpu_check.py refuses to start when the data root lacks a dataset its checks read (on a GPU machine that
had MNIST only, IBCL's check failed after the others had started), and names which dataset, where, and which
checks."""
import os
import subprocess
import sys

from conftest import DATA, REPO, load_script


def _mnist_only(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "MNIST").symlink_to(DATA / "MNIST")
    return root


def test_a_missing_dataset_stops_the_checks_before_any_run(tmp_path):
    root, out = _mnist_only(tmp_path), tmp_path / "out"
    env = {**os.environ, "CLTRAIN_DATA": str(root), "CLTRAIN_CACHE": str(tmp_path / "cache")}  # no features cached
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--accelerator", "cpu", "--tiny", "--only",
                           "learner_finetune,learner_ibcl", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "fashion_mnist in" in proc.stderr and "learner_ibcl, its feature extractor's training" in proc.stderr
    assert " mnist in" not in proc.stderr  # MNIST is there: not named
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_what_each_check_needs(tmp_path, monkeypatch):
    gpu_check = load_script("gpu_check")
    assert gpu_check.missing_datasets(["learner_finetune", "ddp1_tame", "learner_ibcl"]) == []  # the full root
    monkeypatch.setenv("CLTRAIN_DATA", str(tmp_path / "empty"))
    assert gpu_check.missing_datasets(["l2m_pool_on_decision_transformer"]) == []  # reads no dataset
    missing = gpu_check.missing_datasets(["learner_finetune", "ddp1_tame"])
    assert len(missing) == 1 and missing[0].startswith("mnist in ") and "learner_finetune, ddp1_tame" in missing[0]
