"""A run leaves the calling process as it found it: environment and torch's thread count."""
import os

import torch

from conftest import quick_config
from cltrain.experiment import RUN_DIR_ENV, run_experiment
from cltrain.trainer import ContinualTrainer


def test_a_run_restores_the_environment_and_thread_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder lands under ./runs
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    seen = {}
    original_place = ContinualTrainer._place

    def place(self, trainer):
        original_place(self, trainer)
        seen["env"] = os.environ.get(RUN_DIR_ENV)  # exported while training: DDP workers inherit it
        torch.set_num_threads(1)  # what _place does for DDP on the CPU

    monkeypatch.setattr(ContinualTrainer, "_place", place)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_experiment(quick_config("bench/pmnist_naive", "stream.n_tasks=2", "model.hidden=[20]"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen["env"] and (tmp_path / seen["env"]).joinpath("metrics.json").exists()
    assert RUN_DIR_ENV not in os.environ
