"""`cltrain report` aggregates known inputs correctly (hand-written run folders)."""
import csv
import io
import json

import numpy as np
import pytest
import yaml

from cltrain.cli import main
from cltrain.report import csv_text, report


def _fake_run(path, schedule, seed, acc, forgetting):
    path.mkdir(parents=True)
    cfg = {"name": "x", "seed": seed, "run_dir": str(path), "stream": {"schedule": schedule, "n_tasks": 10},
           "logger": {"wandb": {"mode": "offline"}}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.json").write_text(json.dumps({"acc": acc, "bwt": -forgetting, "forgetting": forgetting,
                                                    "wall_time_s": 10.0 + seed}))


def test_report_groups_by_config_and_averages_over_seeds(tmp_path, capsys):
    values = {"powerlaw": [0.90, 0.92, 0.94], "none": [0.70, 0.80]}
    for schedule, accs in values.items():
        for seed, acc in enumerate(accs):
            _fake_run(tmp_path / schedule / f"seed{seed}", schedule, seed, acc, 1 - acc)
    header, rows, groups = report([tmp_path])
    by_label = {row[0]: row for row in rows}
    assert set(by_label) == {"stream.schedule=powerlaw", "stream.schedule=none"}  # labelled by what differs
    pl = by_label["stream.schedule=powerlaw"]
    acc_col = header.index("ACC")
    assert pl[1] == 3
    assert pl[acc_col][0] == pytest.approx(0.92)
    assert pl[acc_col][1] == pytest.approx(np.std([0.90, 0.92, 0.94], ddof=1))
    none = by_label["stream.schedule=none"]
    assert none[acc_col][0] == pytest.approx(0.75) and none[header.index("forgetting")][0] == pytest.approx(0.25)
    parsed = list(csv.DictReader(io.StringIO(csv_text(header, rows))))
    assert float(parsed[0]["ACC mean"]) in (pytest.approx(0.92), pytest.approx(0.75))

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out" / "table")]) == 0
    printed = capsys.readouterr().out
    assert "0.920 ± 0.020" in printed and "0.750 ± 0.071" in printed
    assert (tmp_path / "out" / "table.md").read_text() in printed
    assert (tmp_path / "out" / "table.csv").exists()


def test_report_on_nothing_is_a_clear_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
