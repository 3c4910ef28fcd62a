"""The run folder (DESIGN.md, "Run folder contents"): config, metrics, plots, checkpoints."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch

from cltrain import strict_json
from cltrain.config import ExperimentConfig, to_yaml
from cltrain.errors import ConfigError


def default_run_dir(cfg: ExperimentConfig) -> Path:
    return Path("runs") / cfg.name / time.strftime("%Y%m%d-%H%M%S")


# May differ between a run's config.yaml and a config that continues or reuses it: where and how the run
# executes, not what it computes.
WHERE_IT_RUNS = ("resume", "run_dir", "trainer.progress_bar", "trainer.accelerator", "trainer.devices",
                 "trainer.strategy", "trainer.num_nodes", "trainer.materialise_mb", "logger.", "slurm.", "data.")


def config_changes(saved_yaml: Path, cfg: ExperimentConfig) -> list[str]:
    """'key: saved -> now' for every key whose value in a run's config.yaml differs from `cfg`'s, apart from
    WHERE_IT_RUNS. A key added to cltrain after the run was made is missing from its config.yaml; the run had its
    default (new keys default to the behaviour from before them), so a run made by an older version compares equal."""
    from omegaconf import OmegaConf

    from cltrain.report import flatten, run_defaults

    saved = flatten(OmegaConf.to_container(OmegaConf.load(saved_yaml)))
    saved = {**run_defaults(saved), **saved}
    now = flatten(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg))))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if not k.startswith(WHERE_IT_RUNS) and saved.get(k) != now.get(k)]


class RunFolder:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    def prepare(self, cfg: ExperimentConfig) -> None:
        """Create the folder; refuse to overwrite a run unless it is being resumed (nothing finished is lost)."""
        has_run = self.last_checkpoint.exists() or (self.path / "metrics.json").exists()
        if has_run and not cfg.resume:
            raise ConfigError(
                f"run_dir {self.path} already holds a run; pass resume=true to continue it, or choose another run_dir"
            )
        if cfg.resume and not self.last_checkpoint.exists():
            raise ConfigError(f"resume=true but {self.last_checkpoint} does not exist; valid: a run_dir with a checkpoint")
        if cfg.resume:
            self._check_same_experiment(cfg)
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # checked at resolve time; the file system may still refuse (quota, a race)
            raise ConfigError(f"run_dir {self.path} cannot be created ({exc.strerror}); "
                              "valid: a writable folder") from None
        (self.path / "config.yaml").write_text(to_yaml(cfg))

    def _check_same_experiment(self, cfg: ExperimentConfig) -> None:
        """A resumed run must continue the same experiment, or its metrics would mean nothing."""
        changed = config_changes(self.path / "config.yaml", cfg)
        if changed:
            raise ConfigError(f"resume=true with a config that differs from the run's ({'; '.join(changed[:3])}); "
                              f"valid: the run's own config.yaml, changing only where it runs")

    def save_checkpoint(self, state: dict[str, Any], phase: int) -> None:
        """Write atomically (temp file + rename): a kill during the write leaves the previous checkpoint intact."""
        tmp = self.checkpoints / f".phase_{phase}.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.last_checkpoint)

    def save_weights(self, name: str, weights: dict[str, Any]) -> None:
        """checkpoints/<name>.pt, written once (atomically): a resumed phase must not overwrite the start it had."""
        target = self.checkpoints / f"{name}.pt"
        if not target.exists():
            tmp = self.checkpoints / f".{name}.pt.tmp"
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, tmp)
            os.replace(tmp, target)

    def load_checkpoint(self) -> Optional[dict[str, Any]]:
        if not self.last_checkpoint.exists():
            return None
        return torch.load(self.last_checkpoint, map_location="cpu", weights_only=False)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(strict_json.dumps(data, indent=2))  # NaN -> null: strict JSON
        os.replace(tmp, self.path / name)

    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        with open(self.path / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
