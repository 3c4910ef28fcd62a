"""Preemption: SIGUSR1 / SIGTERM make the run checkpoint at the next batch (mid-phase) and stop.

SLURM sends SIGUSR1 shortly before a time limit when asked (`#SBATCH --signal=USR1@90`): we checkpoint and
requeue the job ourselves. SIGTERM comes from `scontrol requeue`, `scancel` or a preempting job: we
checkpoint and exit; SLURM requeues (or not) on its own. The requeued job runs the same command line, which
resumes from the checkpoint (see the sweep's job script).
Lightning installs its own handlers at each fit (and would start its own HPC checkpointing and requeue);
`PreemptionWatcher.install` is called again at every fit start so ours are the ones in force.
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Any, Optional

import torch

from cltrain.distributed import all_max
from cltrain.errors import CltrainError

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(CltrainError):
    """The run stopped on a signal after saving a checkpoint; `resume=true` continues it."""

    exit_code = 1


class PreemptionWatcher:
    CHECK_EVERY = 10

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum

    def install(self) -> None:
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current != self._handler:
                self._previous.setdefault(sig, current)
                signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def should_stop(self, trainer, step: int) -> bool:
        """True on every rank once any rank got a signal (which every rank then records as received).

        Under DDP the ranks agree through a tiny all-reduce, every CHECK_EVERY steps only: it syncs the
        host with the device, and a few steps of delay are nothing next to SLURM's grace period.
        """
        got = self.received or 0
        if trainer.world_size > 1:
            if step % self.CHECK_EVERY:
                return False
            got = int(all_max(torch.tensor([float(got)], device=trainer.strategy.root_device)).item())
            self.received = self.received or got or None  # rank 0 requeues on SIGUSR1 that only rank 1 got
        return bool(got)

    def requeue_if_asked(self) -> Optional[str]:
        """After SIGUSR1 inside a SLURM job, put the job back in the queue; returns the job id requeued."""
        if self.received != signal.SIGUSR1 or "SLURM_JOB_ID" not in os.environ:
            return None
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        subprocess.run(["scontrol", "requeue", job], check=False)
        return job
