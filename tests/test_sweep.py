"""Sweep grids and the local launcher (the SLURM launcher is in test_slurm.py)."""
import json
from pathlib import Path

import pytest

from cltrain.errors import ConfigError
from cltrain.launch.grid import expand, split_values
from conftest import QUICK, run_cli


def test_grid_keeps_lists_whole_and_names_points_by_swept_keys():
    assert split_values("[100,100],[400,400]") == ["[100,100]", "[400,400]"]
    points = expand(["model.hidden=[100,100],[400]", "seed=0,1", "stream.n_tasks=3"])
    assert len(points) == 4
    assert points[0].overrides == ["model.hidden=[100,100]", "seed=0", "stream.n_tasks=3"]
    assert [p.name for p in points] == ["model.hidden=100x100__seed=0", "model.hidden=100x100__seed=1",
                                        "model.hidden=400__seed=0", "model.hidden=400__seed=1"]
    with pytest.raises(ConfigError, match="not key=value"):
        expand(["seed"])


def test_local_sweep_runs_every_point_and_skips_finished_ones(tmp_path):
    root = tmp_path / "sweep"
    args = ("sweep", "bench/pmnist_naive", *QUICK, "stream.n_tasks=2", "model.hidden=[50]", "seed=0,1",
            "--launcher", "local", f"run_dir={root}")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((root / "sweep.json").read_text())
    runs = [Path(p["run_dir"]) for p in meta["points"]]
    assert [r.name for r in runs] == ["seed=0", "seed=1"] and all((r / "metrics.json").exists() for r in runs)
    status = run_cli("sweep", "--status", str(root))
    assert "2 done" in status.stdout
    assert run_cli(*args).returncode == 2  # the sweep folder exists: refused, nothing rerun or overwritten
    bad = run_cli("sweep", "bench/pmnist_naive", "seed=0,1", "trainer.epochs=2", f"run_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "trainer.epochs" in bad.stderr and not (tmp_path / "bad").exists()
