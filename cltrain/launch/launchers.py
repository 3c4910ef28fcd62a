"""Launchers: how the points of a sweep get run (registered by name for `--launcher`)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cltrain import strict_json
from cltrain.config import ExperimentConfig
from cltrain.errors import CltrainError, ConfigError
from cltrain.launch.grid import Point
from cltrain.registry import Registry

EXIT_FILE = ".exit_code"  # written next to a point's results when its `cltrain fit` returns


class Launcher:
    def __init__(self, root: Path, experiment: str, points: list[Point], cfg: ExperimentConfig):
        self.root, self.experiment, self.points, self.cfg = root, experiment, points, cfg

    def describe(self) -> str:
        return "\n".join(f"{self.root / p.name}: cltrain fit {self.experiment} {' '.join(p.overrides)}"
                         for p in self.points)

    def check(self) -> None:
        """What this launcher needs from the machine, checked before the sweep folder is written."""

    def launch(self, meta: dict[str, Any]) -> int:
        raise NotImplementedError


LAUNCHERS: Registry[type[Launcher]] = Registry("launcher", "--launcher")


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    """One point after another on this machine, each in its own process; finished points are skipped."""

    def launch(self, meta: dict[str, Any]) -> int:
        failed = 0
        for i, point in enumerate(meta["points"], 1):
            run = Path(point["run_dir"])
            if (run / "metrics.json").exists():
                continue
            resume = (run / "checkpoints" / "last.pt").exists()
            print(f"[sweep {i}/{len(meta['points'])}] {point['name']}", flush=True)
            cmd = [sys.executable, "-m", "cltrain.cli", "fit", meta["experiment"], *point["overrides"],
                   f"run_dir={run}", f"resume={str(resume).lower()}"]
            run.mkdir(parents=True, exist_ok=True)
            (run / ".running").write_text(str(os.getpid()))
            with open(self.root / "logs" / f"{point['name']}.log", "a") as log:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
            (run / ".running").unlink()
            (run / EXIT_FILE).write_text(str(code))
            if code:
                failed += 1
                print(f"  failed (exit {code}); log: {self.root / 'logs' / (point['name'] + '.log')}", flush=True)
        print(f"sweep finished: {len(meta['points']) - failed} done, {failed} failed; cltrain report {self.root}")
        return 1 if failed else 0


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    """A SLURM job array: task i runs point i with `srun cltrain fit`; requeued tasks resume."""

    def ntasks(self) -> int:
        if self.cfg.slurm.ntasks_per_node:
            return self.cfg.slurm.ntasks_per_node
        devices = self.cfg.trainer.devices
        return devices if isinstance(devices, int) and devices > 0 else 1

    def header(self) -> list[str]:
        s, n = self.cfg.slurm, len(self.points)
        lines = [
            f"#SBATCH --job-name=cltrain-{self.cfg.name.replace('/', '-')}",
            f"#SBATCH --array=0-{n - 1}" + (f"%{s.max_parallel}" if s.max_parallel else ""),
            f"#SBATCH --output={self.root}/logs/%A_%a.out",
            "#SBATCH --open-mode=append",  # a requeued task appends to its log instead of overwriting it
            "#SBATCH --requeue",
            f"#SBATCH --signal=USR1@{s.signal_grace_s}",  # checkpoint + requeue before the time limit
            f"#SBATCH --nodes={self.cfg.trainer.num_nodes}",
            f"#SBATCH --ntasks-per-node={self.ntasks()}",
            f"#SBATCH --cpus-per-task={s.cpus_per_task}",
            f"#SBATCH --time={s.time}",
        ]
        optional = {"partition": s.partition, "mem": s.mem, "gpus-per-node": s.gpus_per_node or None}
        lines += [f"#SBATCH --{k}={v}" for k, v in optional.items() if v is not None]
        return lines + list(s.extra)

    def script(self) -> str:
        body = f"""#!/bin/bash
{chr(10).join(self.header())}
# Written by `cltrain sweep`. Array task i runs line i+1 of points.tsv: <run folder> TAB <overrides>.
set -uo pipefail
{chr(10).join(self.cfg.slurm.setup)}
cd {shlex.quote(os.getcwd())}
LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(self.root / 'points.tsv'))})
RUN=${{LINE%%$'\\t'*}}
eval "OVERRIDES=(${{LINE#*$'\\t'}})"
RESUME=false; [ -f "$RUN/checkpoints/last.pt" ] && RESUME=true
echo "[$(date '+%F %T')] task $SLURM_ARRAY_TASK_ID, restart ${{SLURM_RESTART_COUNT:-0}}, resume=$RESUME"
if [ -f "$RUN/metrics.json" ]; then echo "already done: $RUN"; exit 0; fi
srun {shlex.quote(sys.executable)} -m cltrain.cli fit {shlex.quote(self.experiment)} "${{OVERRIDES[@]}}" \\
    run_dir="$RUN" resume=$RESUME
code=$?
mkdir -p "$RUN" && echo $code > "$RUN/{EXIT_FILE}"
exit $code
"""
        return body

    def describe(self) -> str:
        return super().describe() + "\n\n" + self.script()

    def check(self) -> None:
        if shutil.which("sbatch") is None:
            raise ConfigError("bad value 'slurm' for '--launcher': sbatch is not on PATH (no SLURM here); valid here: "
                              "--launcher local")

    def launch(self, meta: dict[str, Any]) -> int:
        # points.tsv holds shell-quoted overrides, read back by the job script with eval
        (self.root / "points.tsv").write_text("".join(
            f"{self.root / p.name}\t{shlex.join(p.overrides)}\n" for p in self.points))
        (self.root / "job.sh").write_text(self.script())
        proc = subprocess.run(["sbatch", "--parsable", str(self.root / "job.sh")], capture_output=True, text=True)
        if proc.returncode:  # nothing submitted: the folder is not a sweep yet, so the same command can retry
            (self.root / "sweep.json").unlink()
            raise CltrainError(f"sbatch failed: {proc.stderr.strip()} (nothing was submitted)")
        job_id = proc.stdout.strip().split(";")[0]
        meta["slurm_job_id"] = job_id
        (self.root / "sweep.json").write_text(strict_json.dumps(meta, indent=2))
        print(f"submitted SLURM job array {job_id} ({len(self.points)} tasks); "
              f"cltrain sweep --status {self.root}")
        return 0


def _slurm_states(job_id: str | None) -> dict[int, str]:
    """Array task index -> SLURM state (RUNNING, PENDING, ...), for tasks still known to squeue."""
    if not job_id or shutil.which("squeue") is None:
        return {}
    proc = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%K %T"], capture_output=True, text=True)
    states = {}
    for line in proc.stdout.splitlines():
        task, _, state = line.partition(" ")
        if task.isdigit():
            states[int(task)] = state.lower()
    return states


def point_state(root: Path, meta: dict[str, Any]) -> list[str]:
    """done / running / pending / failed / not started, for every point of a sweep."""
    queued = _slurm_states(meta.get("slurm_job_id"))
    out = []
    for i, point in enumerate(meta["points"]):
        run = Path(point["run_dir"])
        code_file, running = run / EXIT_FILE, run / ".running"
        if (run / "metrics.json").exists():
            out.append("done")
        elif i in queued:
            out.append(queued[i])
        elif running.exists() and _alive(int(running.read_text() or 0)):
            out.append("running")
        elif code_file.exists() and code_file.read_text().strip() not in ("", "0"):
            out.append("failed")
        else:
            out.append("not started")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return pid > 0
    except OSError:
        return False
