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


def test_learner_refuses_subclasses_that_would_change_how_it_steps():
    """The Learner takes the optimizer step in its training_step and clips in on_before_optimizer_step: a subclass
    redefining either would step on nothing or lose the clip silently, so the class itself is refused."""
    from cltrain.learners.base import Learner

    with pytest.raises(TypeError, match="override step_outputs"):
        type("Stepless", (Learner,), {"training_step": lambda self, batch, batch_idx: None})
    with pytest.raises(TypeError, match="override before_update"):
        type("Unclipped", (Learner,), {"on_before_optimizer_step": lambda self, optimizer: None})
    # a learner stepping by hand (TAME) writes its own training_step
    assert type("ByHand", (Learner,), {"optimizes_itself": True, "training_step": lambda self, b, i: None})


class ThreeTimes:
    """A loader handing out one ready batch three times (cltrain's loader hands out ready batches too)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return iter([self.batch] * 3)

    def __len__(self):
        return 3


def _clipped_fit(precision_plugins, cap: float):
    """Fit a Learner (plain SGD, lr 1) for 3 steps on a fixed batch with optim.grad_clip_norm=cap; return the
    gradient norms before_update saw and the size of each update."""
    from cltrain.config import OptimConfig
    from cltrain.learners.base import Learner
    from cltrain.streams.loader import Batch

    class Watched(Learner):
        def before_update(self, optimizer):
            self.seen.append(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in self.parameters()])).item())
            self.before.append(torch.cat([p.detach().flatten().clone() for p in self.parameters()]))

    torch.manual_seed(0)
    learner = Watched(torch.nn.Linear(4, 2), OptimConfig(name="sgd", lr=1.0, momentum=0.0, grad_clip_norm=cap))
    learner.seen, learner.before = [], []
    batch = Batch(torch.randn(8, 4) * 10, torch.randint(0, 2, (8,)), t=None, n_new=8)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, plugins=precision_plugins,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(learner, train_dataloaders=ThreeTimes(batch))
    after = [*learner.before[1:], torch.cat([p.detach().flatten() for p in learner.parameters()])]
    return trainer, learner.seen, [torch.linalg.vector_norm(a - b).item() for a, b in zip(after, learner.before)]


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_learner_step_reads_unclipped_gradients_then_applies_clipped_ones(precision):
    """The order Lightning's automatic loop had, now in the Learner's own step: a method's before_update sees the
    whole (unscaled, unclipped) gradient, the update applies the clipped one; under 16-mixed the step still goes
    through the grad scaler (its scale grows after finite steps)."""
    plugins = ([MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1))]
               if precision == "16-mixed" else None)
    trainer, seen, updates = _clipped_fit(plugins, cap=0.01)
    assert len(seen) == 3 and min(seen) > 0.1  # far above the cap: before_update ran before the clip
    assert updates == pytest.approx([0.01] * 3, rel=1e-3)  # lr 1: each update is the clipped gradient
    if plugins:
        assert precision_state(trainer)["scale"] == 2.0 ** 3  # the scaler stepped and grew three times
    _, free, unclipped = _clipped_fit(plugins, cap=1e6)
    assert unclipped == pytest.approx(free, rel=1e-3)  # no cap in reach: the update is the whole gradient
