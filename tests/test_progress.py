"""The progress bar shows the training loss without reading it back from the device every step."""
import csv
import re
from pathlib import Path

import pytest
from pytorch_lightning.trainer.connectors.logger_connector import result as lightning_result

from conftest import quick_config
from cltrain.experiment import run_experiment
from cltrain.learners.base import Learner


@pytest.mark.parametrize("bar", ["true", "false"])
def test_no_progress_bar_value_is_read_back_per_step(tmp_path, monkeypatch, capsys, bar):
    """Lightning reads every prog_bar value back (`.item()`, a GPU sync) at every batch end once it was logged;
    none of cltrain's logging may go that way, with the bar on or off. With the bar on, the loss is shown."""
    monkeypatch.chdir(tmp_path)
    read_backs = []
    convert = lightning_result.convert_tensors_to_scalars
    monkeypatch.setattr(lightning_result, "convert_tensors_to_scalars",
                        lambda value: read_backs.append(value) or convert(value))
    run_experiment(quick_config("bench/pmnist_naive", "stream.n_tasks=2", "model.hidden=[20]",
                                f"trainer.progress_bar={bar}"))  # 16 batches a phase, logged at the first
    assert read_backs == []
    shown = re.findall(r"train/loss=(\d+\.\d+)", capsys.readouterr().out)
    if bar == "true":
        assert shown and all(0 < float(v) < 5 for v in shown)
    else:
        assert not shown


def test_logged_loss_is_the_loss_of_the_step_it_is_written_at(tmp_path, monkeypatch):
    """Lightning writes the loggers every 50 batches of the run (across phases); a value logged on another batch
    was written up to 49 steps late under the writing step's label. Each written train/loss must be that step's."""
    monkeypatch.chdir(tmp_path)
    losses = []
    loss = Learner.loss
    monkeypatch.setattr(Learner, "loss", lambda self, logits, batch: losses.append(v := loss(self, logits, batch))
                        or v)
    result = run_experiment(quick_config("bench/pmnist_naive", "stream.n_tasks=4", "model.hidden=[20]",
                                         "run_dir=run"))  # 16 batches a phase: steps 49 and beyond cross phases
    rows = [r for path in sorted(Path("run/logs").rglob("metrics.csv")) for r in csv.DictReader(open(path))
            if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [49]
    assert [float(r["train/loss"]) for r in rows] == pytest.approx([losses[49].item()], rel=1e-6)
    assert result["steps"] == 64 and len(losses) == 64
