"""Shared fixtures: the real data root, quick real-data configs, and running the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CLTRAIN_DATA") or REPO.parent / "shared" / "data")

# Split MNIST in 2 tasks ({0..4}, {5..9}) met in the order 0, 1, 0: task 0 recurs. 2,000 images per task,
# 6 epochs (96 batches per phase); a window of 30 losses (the paper's 100 assumes ~4,700 batches per task).
TAME_RECURRING = [
    "stream.n_tasks=2", "stream.order=[0,1,0]", "stream.train_per_task=2000", "stream.test_per_task=500",
    "trainer.epochs_per_task=6", "learner.window=30", "learner.selector_capacity=1000",
    "learner.prune_capacity=1000", "learner.expert_prune_epochs=3", "learner.selector_epochs=8",
    "learner.eval_selector_epochs=3", "trainer.progress_bar=false", "logger.wandb.mode=disabled",
]

# A short real run: 3 permuted-MNIST tasks, 2,000 training / 500 test images each.
QUICK = [
    "stream.n_tasks=3", "stream.train_per_task=2000", "stream.test_per_task=500",
    "trainer.progress_bar=false", "logger.wandb.mode=disabled",
]


@pytest.fixture(scope="session", autouse=True)
def data_root() -> Path:
    if not (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        raise RuntimeError(f"real MNIST expected under {DATA}; set CLTRAIN_DATA")  # fail loudly, never skip
    os.environ["CLTRAIN_DATA"] = str(DATA)
    return DATA


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CLTRAIN_DATA": str(DATA), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cltrain.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def signal_mid_phase(args: list[str], sig: int, after: str = "phase 1/3") -> tuple[int, str]:
    """Start `cltrain <args>`, send `sig` to it shortly after it prints `after` (inside the next phase)."""
    env = {**os.environ, "CLTRAIN_DATA": str(DATA), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cltrain.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if after in line:
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    out.append(proc.stdout.read())
    proc.wait(timeout=120)
    return proc.returncode, "".join(out)


def quick_config(experiment: str = "bench/pmnist_naive", *overrides: str):
    from cltrain.config import load_config

    return load_config(experiment, [*QUICK, *overrides])
