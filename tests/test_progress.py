"""The progress bar shows the training loss without reading it back from the device every step."""
import re

import pytest
from pytorch_lightning.trainer.connectors.logger_connector import result as lightning_result

from conftest import quick_config
from cltrain.experiment import run_experiment


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
