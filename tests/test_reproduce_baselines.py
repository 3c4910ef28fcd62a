"""scripts/reproduce_baselines.py's variant comparison pairs each variant run with the 32x32 check of the same
seed, and nothing else (hand-written run folders)."""
import json
from types import SimpleNamespace

import yaml

from conftest import load_script


def script():
    return load_script("reproduce_baselines")


def _run(path, acc, pad):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"stream": {"pad": pad}}))
    (path / "metrics.json").write_text(json.dumps({"acc": acc, "acc_matrix": [[0.9, 0.1], [0.8, 0.95]]}))


def test_variants_pair_runs_of_the_same_seed_on_32x32_inputs(tmp_path):
    checks, variants = tmp_path / "padded" / "pmnist_5000_check", tmp_path / "variants"
    _run(checks / "online_ewc_1000.0_s0", 0.95, 2)
    _run(checks / "online_ewc_1000.0_s1", 0.96, 2)
    _run(checks / "online_ewc_1000.0_s2", 0.99, 0)  # 28x28: not a partner
    gamma = variants / "gamma_0.9" / "pmnist_5000_check"
    _run(gamma / "online_ewc_1000.0_s0", 0.93, 2)
    _run(gamma / "online_ewc_1000.0_s1", 0.95, 2)
    _run(gamma / "online_ewc_1000.0_s2", 0.50, 2)  # its check is 28x28
    _run(gamma / "online_ewc_1000.0_s3", 0.50, 2)  # no check on seed 3
    page = script().variants_section(SimpleNamespace(check_steps=5000, pmnist_test=2000), tmp_path / "padded",
                                     variants)
    rows = [line for line in page.splitlines() if line.startswith("| online EWC")]
    assert len(rows) == 1, page  # one variant with runs, one method it applies to
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert cells[3] == "0, 1"  # seeds paired
    assert cells[4].startswith("95.5 ± 0.7") and cells[5].startswith("94.0 ± 1.4")
    assert cells[6] == "-1.5"  # mean of the per-seed differences (-2, -1)
