"""Sweeps, requeue and srun DDP against a real one-node SLURM cluster started for these tests."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import QUICK, REPO, results, run_cli

SHORT = [*QUICK, "stream.n_tasks=2", "stream.train_per_task=1000", "model.hidden=[100,100]",
         "slurm.cpus_per_task=1"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    script = REPO / "scripts" / "slurm" / "local_cluster.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder)], capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr  # a cluster we cannot start is a failure
    yield folder
    subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True)
    subprocess.run(["scancel", "--user=root"], capture_output=True)
    subprocess.run(["bash", str(script), "stop", str(folder)], capture_output=True)


def wait_for(check, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    queue = subprocess.run(["squeue", "-l"], capture_output=True, text=True).stdout
    nodes = subprocess.run(["sinfo", "-R", "-l"], capture_output=True, text=True).stdout
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{queue}\n{nodes}")


def sweep(root, *overrides):
    proc = run_cli("sweep", "bench/pmnist_naive", *SHORT, *overrides, "--launcher", "slurm", f"run_dir={root}")
    assert proc.returncode == 0, proc.stderr
    assert "submitted SLURM job array" in proc.stdout
    return json.loads((root / "sweep.json").read_text())


def metrics(run):
    return results(Path(run))


def test_array_sweep_completes_every_point(slurm, tmp_path):
    root = tmp_path / "sweep"
    meta = sweep(root, "seed=0,1", "optim.lr=0.01,0.05")
    assert len(meta["points"]) == 4 and meta["slurm_job_id"]
    runs = [Path(p["run_dir"]) for p in meta["points"]]
    wait_for(lambda: all((r / "metrics.json").exists() for r in runs), 300, "all 4 array tasks")
    assert {r.name for r in runs} == {"seed=0__optim.lr=0.01", "seed=0__optim.lr=0.05",
                                      "seed=1__optim.lr=0.01", "seed=1__optim.lr=0.05"}
    for run in runs:
        for name in ("config.yaml", "metrics.csv", "acc_matrix.png", "checkpoints/last.pt"):
            assert (run / name).exists(), (run, name)
    status = run_cli("sweep", "--status", str(root))
    assert "4 done" in status.stdout
    report = run_cli("report", str(root))
    assert report.returncode == 0 and report.stdout.count("seed=") == 0  # seeds are averaged, not listed
    assert "optim.lr=0.01" in report.stdout and "optim.lr=0.05" in report.stdout


def test_requeued_job_resumes_and_matches_an_uninterrupted_run(slurm, tmp_path):
    # ~5 s a phase on 2 cores: the requeue (sent when phase 1 has ended) must land while phases 2-4 still run
    longer = ["stream.n_tasks=4", "stream.train_per_task=20000", "trainer.epochs_per_task=5"]
    reference = tmp_path / "reference"
    assert run_cli("fit", "bench/pmnist_naive", *SHORT, *longer, f"run_dir={reference}").returncode == 0

    root = tmp_path / "sweep"
    meta = sweep(root, *longer)
    job = meta["slurm_job_id"]
    log = lambda: "".join(p.read_text() for p in (root / "logs").glob("*.out"))  # noqa: E731
    run = Path(meta["points"][0]["run_dir"])
    wait_for(lambda: "phase 1/4" in log(), 300, "phase 1 of the job")
    requeue = subprocess.run(["scontrol", "requeue", f"{job}_0"], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    # scontrol also requeues a finished job, which would then only print "already done": not what we test
    assert not (run / "metrics.json").exists(), "the job finished before the requeue; make it longer"
    wait_for(lambda: "restart 1" in log(), 200, "the job to come back from the queue")
    wait_for(lambda: (run / "metrics.json").exists(), 400, "the requeued job to finish")
    text = log()
    assert "restart 1, resume=true" in text  # it really went round the queue and resumed
    assert "stopped by signal 15 after checkpointing" in text
    assert metrics(run) == metrics(reference)


def test_srun_two_tasks_train_with_ddp(slurm, tmp_path):
    root = tmp_path / "sweep"
    meta = sweep(root, "trainer.strategy=ddp", "trainer.devices=2", "plugins.replay.capacity=200")
    run = Path(meta["points"][0]["run_dir"])
    wait_for(lambda: (run / "metrics.json").exists() or (run / ".exit_code").exists(), 300, "the DDP job")
    out = "".join(p.read_text() for p in (root / "logs").glob("*.out"))
    assert (run / "metrics.json").exists(), out[-3000:]
    assert "MEMBER: 2/2" in out  # srun started two ranks, Lightning's SLURM environment joined them
    assert "#SBATCH --ntasks-per-node=2" in (root / "job.sh").read_text()
    assert metrics(run)["replay_ranks_agree"] is True
