"""The learning-speed probe: a copy trained on the new task alone from each phase's starting weights."""
import json

from cltrain.config import load_config
from cltrain.experiment import run_experiment
from conftest import QUICK, TIMING

BASE = [*QUICK, "stream.schedule=powerlaw", "trainer.steps_per_task=30", "model.hidden=[100,100]"]
PROBE_KEYS = {"probe", "probe_auc_mean", "probe_final_mean"}


def test_probe_leaves_the_run_unchanged_and_starts_from_each_phases_weights(tmp_path):
    plain = run_experiment(load_config("powerlaw/pmnist", [*BASE, f"run_dir={tmp_path / 'plain'}"]))
    probed = run_experiment(load_config("powerlaw/pmnist", [
        *BASE, "plugins.probe.steps=12", "plugins.probe.eval_every=4", f"run_dir={tmp_path / 'probed'}"]))
    on_disk = json.loads((tmp_path / "probed" / "metrics.json").read_text())
    assert PROBE_KEYS <= set(on_disk)
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING | PROBE_KEYS}  # noqa: E731
    assert strip(on_disk) == strip(json.loads((tmp_path / "plain" / "metrics.json").read_text()))
    assert strip(probed) == strip(plain)

    phases = on_disk["probe"]["phases"]
    assert [p["task"] for p in phases] == [0, 1, 2]
    # step 0 scores the phase's starting weights: the initial ones, then those the previous phase ended with
    assert phases[0]["acc"][0] == on_disk["acc_init"][0]
    for k in (1, 2):
        assert phases[k]["acc"][0] == on_disk["acc_matrix"][k - 1][k]
    for p in phases:
        assert p["steps"] == [0, 4, 8, 12]
        assert p["final"] == p["acc"][-1] > p["acc"][0] + 0.2  # the copy does learn the task
        area = sum((a + b) / 2 * 4 for a, b in zip(p["acc"], p["acc"][1:])) / 12
        assert abs(p["auc"] - area) < 1e-12
    assert abs(on_disk["probe_auc_mean"] - (phases[1]["auc"] + phases[2]["auc"]) / 2) < 1e-12
