"""Loggers of a run: Lightning's CSV logger for training curves, wandb (offline by default) for everything."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger

from cltrain.config import ExperimentConfig, as_dict
from cltrain.run import RunFolder


class RunLoggers:
    """Creates the configured Lightning loggers once per run; they are handed to every per-phase fit."""

    def __init__(self, cfg: ExperimentConfig, run: RunFolder):
        self.lightning: list[Logger] = []
        self.wandb = None
        if cfg.logger.csv:
            self.lightning.append(CSVLogger(save_dir=str(run.path), name="logs"))
        if cfg.logger.wandb.mode != "disabled":
            self.wandb = self._wandb(cfg, run)
            self.lightning.append(self.wandb)

    @staticmethod
    def _wandb(cfg: ExperimentConfig, run: RunFolder):
        from pytorch_lightning.loggers import WandbLogger  # wandb is slow to import; only when used

        w = cfg.logger.wandb
        # A stable id per run folder: a resumed run continues the same wandb run instead of starting a new one.
        run_id = hashlib.sha1(str(run.path.resolve()).encode()).hexdigest()[:16]
        logger = WandbLogger(
            save_dir=str(run.path), project=w.project, entity=w.entity, name=w.name or run.path.name,
            mode=w.mode, id=run_id, resume="allow", config=as_dict(cfg),
        )
        logger.experiment.define_metric("phase")
        logger.experiment.define_metric("eval/*", step_metric="phase")
        return logger

    def log_phase(self, phase: int, row: list[float], seen: float, step: int) -> None:
        metrics: dict[str, float] = {f"eval/acc_task_{j}": acc for j, acc in enumerate(row)}
        metrics["eval/avg_acc_seen"] = seen
        for logger in self.lightning:
            if logger is self.wandb:
                logger.experiment.log({**metrics, "phase": phase})
            else:
                logger.log_metrics({**metrics, "phase": phase}, step=step)
                logger.save()

    def finish(self, metrics: dict[str, Any], run_dir: Path) -> None:
        if self.wandb is None:
            return
        import wandb

        matrix = metrics["acc_matrix"]
        table = wandb.Table(columns=["phase", *[f"task_{j}" for j in range(len(matrix[0]))]],
                            data=[[i, *row] for i, row in enumerate(matrix)])
        experiment = self.wandb.experiment
        experiment.log({"acc_matrix": table, "acc_matrix_png": wandb.Image(str(run_dir / "acc_matrix.png")),
                        "retention_png": wandb.Image(str(run_dir / "retention.png"))})
        for key in ("acc", "bwt", "fwt", "forgetting", "wall_time_s"):
            if metrics[key] is not None:  # fwt: None under trainer.eval_init=false
                experiment.summary[key] = metrics[key]
        experiment.finish()
