"""Shared fixtures: the real data root, quick real-data configs, and running the real CLI."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
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


# metrics.json keys that measure time or name files, not results: left out when two runs are compared
TIMING = frozenset({"wall_time_s", "phase_wall_time_s", "finished_utc", "detection_plot"})


def load_script(name: str):
    """scripts/<name>.py as a module, for tests of a script's own functions. Registered in sys.modules (a script's
    dataclasses look their module up there), with scripts/ on the path (scripts import their siblings)."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def results(metrics: dict | Path) -> dict:
    """A run's metrics (a dict, or a run folder's metrics.json) without the TIMING keys."""
    if isinstance(metrics, Path):
        metrics = json.loads((metrics / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for in-process training: the CI box has 2 shared cores, and more threads than cores
    make torch's OpenMP workers spin against each other (measured 20x slower). Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def data_root() -> Path:
    if not (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        raise RuntimeError(f"real MNIST expected under {DATA}; set CLTRAIN_DATA")  # fail loudly, never skip
    os.environ["CLTRAIN_DATA"] = str(DATA)
    # Every process the tests start (CLI runs, scripts, SLURM jobs) takes one intra-op thread, for the reason of
    # `one_thread`: a run's two threads on the 2 shared cores, with anything else busy there, measured 3x slower
    # (a 5-phase split-MNIST run: 70 s against 23 s with one). This process's own torch read it at import.
    os.environ["OMP_NUM_THREADS"] = "1"
    return DATA


# Every CLI run of the tests checks its collectives (cltrain.distributed.collective_check): under DDP a
# collective issued outside cltrain/distributed.py, or with a tensor off the process group's device, fails it.
CLI_ENV = {"CLTRAIN_DATA": str(DATA), "PYTHONUNBUFFERED": "1", "CLTRAIN_CHECK_COLLECTIVES": "1"}


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **CLI_ENV, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cltrain.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def signal_mid_phase(args: list[str], sig: int, after: str = "phase 1/3") -> tuple[int, str]:
    """Start `cltrain <args>`, send `sig` to it shortly after it prints `after` (inside the next phase): after
    half the time the finished phase took (its line ends "| 0.5 s"), at most 0.5 s. A fixed 0.5 s outlasted a
    whole next phase on a quiet machine, where the signal then met a phase boundary instead."""
    env = {**os.environ, **CLI_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "cltrain.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if after in line:
            break
    took = re.search(r"\| ([\d.]+) s\s*$", out[-1] if out else "")
    time.sleep(min(0.5, max(0.05, 0.5 * float(took.group(1)))) if took else 0.5)
    proc.send_signal(sig)
    out.append(proc.stdout.read())
    proc.wait(timeout=120)
    return proc.returncode, "".join(out)


def kill_after(args: list[str], after: str) -> int:
    """Start `cltrain <args>`, SIGKILL it as soon as it prints `after` (e.g. "phase 1/3": that phase is
    checkpointed), and return its exit code. Callers assert the run had not finished, or the test proves nothing."""
    proc = subprocess.Popen([sys.executable, "-m", "cltrain.cli", *args], cwd=REPO, env={**os.environ, **CLI_ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    for line in proc.stdout:
        if after in line or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


def quick_config(experiment: str = "bench/pmnist_naive", *overrides: str):
    from cltrain.config import load_config

    return load_config(experiment, [*QUICK, *overrides])
