"""The trainer's contact points with Lightning internals, each on a real Lightning fit: if a Lightning upgrade
changes them, these fail loudly instead of runs silently logging or scaling differently."""
import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.plugins.precision import MixedPrecision

from cltrain.trainer import continue_logging_step, load_precision_state, precision_state


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class AtStart(Callback):
    def __init__(self, fn):
        self.fn = fn

    def on_train_start(self, trainer, pl_module):
        self.fn(trainer)


def _fit(callbacks, logger=False, plugins=None, batches=5):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8 * batches, 4)), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=logger, callbacks=callbacks, plugins=plugins,
                         log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Tiny(), data)
    return trainer


def test_logging_step_continues_from_the_given_count(tmp_path):
    logger = CSVLogger(tmp_path, name="run", version=0)
    _fit([AtStart(lambda trainer: continue_logging_step(trainer, 1000))], logger=logger)
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [1000, 1001, 1002, 1003, 1004]


def test_logging_step_fails_loudly_if_lightning_drops_its_counter():
    trainer = _fit([])
    del trainer.fit_loop.epoch_loop._batches_that_stepped  # what a renaming upgrade would look like
    with pytest.raises(RuntimeError, match="_batches_that_stepped is gone"):
        continue_logging_step(trainer, 5)


def test_grad_scaler_state_is_carried_into_the_next_fit():
    """16-mixed's scaler (real fp16 autocast on the CPU here): a phase's fit starts where the last one ended."""
    def amp():
        return [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1))]

    first = _fit([], plugins=amp())
    state = precision_state(first)
    assert state["scale"] == 2.0 ** 5  # doubled after each of 5 finite steps
    second = _fit([AtStart(lambda trainer: load_precision_state(trainer, state))], plugins=amp())
    assert precision_state(second)["scale"] == 2.0 ** 10  # continued, not restarted at 1
    assert precision_state(_fit([], plugins=amp()))["scale"] == 2.0 ** 5  # without it: a fresh scaler
    assert precision_state(_fit([])) == {}  # 32-true has nothing to carry


def test_learner_hook_names_and_batches_reach_lightning_unchanged(tmp_path):
    """cltrain's Learner sets Lightning's `_current_fx_name` without nn.Module.__setattr__ and hands batches over
    without Lightning's device walk: self.log (which reads the hook name) must still log, and the batch a step
    receives must be the loader's very object."""
    from cltrain.config import load_config
    from cltrain.experiment import run_experiment
    from cltrain.learners.finetune import Finetune

    seen = []

    def spy(self, batch, batch_idx):
        seen.append((self._current_fx_name, batch))
        return Finetune.__bases__[0].training_step(self, batch, batch_idx)

    original = Finetune.training_step
    Finetune.training_step = spy
    try:
        run_experiment(load_config("bench/pmnist_naive", [
            "stream.n_tasks=1", "stream.train_per_task=6400", "stream.test_per_task=100", "trainer.progress_bar=false",
            "logger.wandb.mode=disabled", f"run_dir={tmp_path}/run"]))
    finally:
        Finetune.training_step = original
    assert {name for name, _ in seen} == {"training_step"} and len(seen) == 50
    assert all(type(batch).__name__ == "Batch" for _, batch in seen)
    rows = list(csv.DictReader(open(next((tmp_path / "run" / "logs").rglob("metrics.csv")))))
    assert any(row.get("train/loss") for row in rows)  # Lightning writes it at step 49 (log_every_n_steps=50)


class CountingNull(Callback):
    """Counts how often Lightning enters the profiler during a fit (through the trainer's own profiler)."""

    def __init__(self):
        self.entered = 0

    def on_train_start(self, trainer, pl_module):
        profile = trainer.profiler.profile

        def counted(name):
            self.entered += 1
            return profile(name)

        trainer.profiler.profile = counted


def test_null_profiler_is_entered_by_lightning_and_records_nothing():
    from cltrain.trainer import NullProfiler

    counter = CountingNull()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 4)), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[counter], profiler=NullProfiler(),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), data)
    # Lightning still routes every hook through it (what the saving is about) and the fit trains as usual
    assert counter.entered >= 5 * 10 and trainer.global_step == 5
    assert trainer.profiler.summary() == ""
    with NullProfiler().profile("anything") as inside:
        assert inside is None


def test_learner_training_steps_keep_their_signature_for_lightning():
    """Lightning decides per step whether to pass batch_idx from training_step's signature; every learner's stored
    signature must give what parsing the function gives."""
    import inspect
    import types

    from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

    from cltrain.catalog import known_names
    from cltrain.learners.base import LEARNERS
    import cltrain.learners  # noqa: F401  (registers every method)

    for name in known_names("LEARNERS"):
        step = LEARNERS.get(name).training_step
        assert "__signature__" in vars(step), name
        parsed = types.FunctionType(step.__code__, step.__globals__, step.__name__, step.__defaults__, step.__closure__)
        parsed.__annotations__, parsed.__kwdefaults__ = step.__annotations__, step.__kwdefaults__
        assert inspect.getfullargspec(step) == inspect.getfullargspec(parsed), name
        assert is_param_in_hook_signature(types.MethodType(step, object()), "batch_idx", min_args=2), name
