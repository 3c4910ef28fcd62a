"""Every JSON file a run folder holds is strict JSON: no NaN or Infinity (null instead)."""
import json
import math

import numpy as np
import pytest
import torch

from conftest import QUICK, run_cli
from cltrain import strict_json


def strict_load(path):
    def refuse(name):
        raise AssertionError(f"{path} holds the non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_numbers_become_null_and_arrays_plain():
    data = {"nan": math.nan, "inf": [np.float64("inf"), -math.inf], "f32": np.float32(0.5), "i64": np.int64(3),
            "tensor": torch.tensor([1.0, float("nan")]), "nested": {"ok": 1.25, "none": None}, "text": "NaN"}
    text = strict_json.dumps(data)
    assert strict_json.loads(text) == {"nan": None, "inf": [None, None], "f32": 0.5, "i64": 3,
                                       "tensor": [1.0, None], "nested": {"ok": 1.25, "none": None}, "text": "NaN"}
    with pytest.raises(ValueError, match="NaN"):
        strict_json.loads('{"x": NaN}')


def test_a_real_run_whose_figures_include_nan_writes_strict_metrics_json(tmp_path):
    """Facilitation's mean iterations to a criterion never reached is NaN: metrics.json must say null."""
    run = tmp_path / "run"
    proc = run_cli("fit", "bench/pmnist_naive", *QUICK, "stream.n_tasks=2", f"run_dir={run}",
                   "plugins.facilitation.criterion=1.0", "plugins.facilitation.window=100000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    json_files = sorted(p for p in run.rglob("*.json") if "wandb" not in p.parts)
    assert run / "metrics.json" in json_files
    for path in json_files:
        strict_load(path)
    metrics = strict_load(run / "metrics.json")
    assert metrics["facilitation_iters_mean"] is None  # NaN in memory, null on disk
    assert isinstance(metrics["acc"], float) and len(metrics["acc_matrix"]) == 2
