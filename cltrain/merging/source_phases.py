"""Any run's per-phase weights as task vectors (trainer.keep_phase_weights=true; any learner with one network).

Phase k's vector is the network after phase k minus the base: the network at the first phase's start
(checkpoints/phase_start.pt: the run's seeded initialisation, or the merge learner's learner.base) or the state
dict given as `base=PATH`. Its task is stream.order[k] (a recurring task: its last phase). For a sequential
learner (fine-tuning, EWC, ...) phase k's vector also holds what phases 0..k-1 learned: it is the run's
trajectory, not an independent expert per task, and merging it weighs the early tasks' learning more.
"""
from __future__ import annotations

from pathlib import Path

import torch

from cltrain.errors import ConfigError
from cltrain.merging.base import task_vector
from cltrain.merging.sources import SOURCES, Experts, RunView, Source


def phase_files(run_dir: Path) -> list[Path]:
    """checkpoints/phase_0.pt, phase_1.pt, ... as far as they go without a gap."""
    files, k = [], 0
    while (run_dir / "checkpoints" / f"phase_{k}.pt").is_file():
        files.append(run_dir / "checkpoints" / f"phase_{k}.pt")
        k += 1
    return files


def read_state(path: Path, given: bool) -> dict:
    """A state dict saved with torch.save, in one line when it is not: bad input for `base` when the user gave the
    path, a damaged run folder when it is the run's own file."""
    try:
        state = torch.load(path, map_location="cpu")
        problem = None if isinstance(state, dict) else f"it holds a {type(state).__name__}"
    except Exception as exc:  # torch.load raises many kinds (UnpicklingError, KeyError, RuntimeError) on a bad file
        problem = f"torch.load failed: {type(exc).__name__}"
    if problem is None:
        return state
    if given:
        raise ConfigError(f"bad value {str(path)!r} for 'base'; valid: a state dict saved with torch.save ({problem})")
    raise ConfigError(f"{path} is not a state dict ({problem}): the run folder is damaged; make the run again")


@SOURCES.register("phases")
class PhaseWeights(Source):
    needs_files = ("checkpoints/phase_start.pt",)
    takes_base = True

    def load(self, run: RunView) -> Experts:
        base_file = Path(run.base).expanduser() if run.base else run.path / "checkpoints" / "phase_start.pt"
        base = read_state(base_file, given=bool(run.base))
        files = phase_files(run.path)
        if not files:
            raise ConfigError(f"{run.path} kept no phase's weights (checkpoints/phase_0.pt is missing: the run "
                              f"stopped before its first phase ended); valid: a run that finished a phase")
        vectors = [task_vector(torch.load(f, map_location="cpu"), base) for f in files]
        return Experts(base, vectors, {run.stream.order[k]: k for k in range(len(files))})
