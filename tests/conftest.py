"""Shared fixtures: the real data root, quick real-data configs, and running the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CLTRAIN_DATA") or REPO.parent / "shared" / "data")

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


def quick_config(experiment: str = "bench/pmnist_naive", *overrides: str):
    from cltrain.config import load_config

    return load_config(experiment, [*QUICK, *overrides])
