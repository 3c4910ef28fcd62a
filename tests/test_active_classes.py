"""stream.active_classes=seen: Class-IL trained over the classes met so far (van de Ven & Tolias's "active
classes"), tested over all of them."""
import signal

import torch
import torch.nn.functional as F
from conftest import results, run_cli, signal_mid_phase

from cltrain.config import OptimConfig
from cltrain.learners.base import Learner

# Split MNIST, Class-IL, 5 tasks of two digits, a short real run of the baselines protocol (Adam, MLP 400-400)
JOB = ("fit", "baselines/split_mnist", "stream.scenario=class_incremental", "stream.train_per_task=1000",
       "stream.test_per_task=300", "trainer.steps_per_task=40", "stream.active_classes=seen")


def _head(state: dict) -> torch.Tensor:
    """The output layer's weight: the 2-D weight with one row per class (10)."""
    (weight,) = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2 and v.shape[0] == 10]
    return weight


def _rows_moved(run, phase: int) -> list[bool]:
    start = _head(torch.load(run / "checkpoints" / "phase_start.pt", map_location="cpu"))
    end = _head(torch.load(run / "checkpoints" / f"phase_{phase}.pt", map_location="cpu"))
    return [bool((end[c] != start[c]).any()) for c in range(10)]


def test_classes_of_tasks_not_met_get_no_gradient(tmp_path):
    """With Adam a class row that never gets a gradient never moves: after phase 0 only digits 0 and 1 have, after
    phase 1 digits 0-3. Over every class (the default) all ten rows move from the first phase on."""
    seen, every = tmp_path / "seen", tmp_path / "all"
    for run, value in ((seen, "seen"), (every, "all")):
        proc = run_cli(*JOB[:-1], f"stream.active_classes={value}", "trainer.keep_phase_weights=true",
                       f"run_dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows_moved(seen, 0) == [True] * 2 + [False] * 8
    assert _rows_moved(seen, 1) == [True] * 4 + [False] * 6
    assert _rows_moved(seen, 4) == [True] * 10
    assert _rows_moved(every, 0) == [True] * 10
    # and the tests still choose among all ten digits: the last task is learned and scored on its own labels
    assert results(seen)["acc_matrix"][-1][-1] > 0.5


def test_the_loss_is_narrowed_and_the_prediction_is_not():
    learner = Learner(torch.nn.Identity(), OptimConfig())
    learner.seen_classes = torch.tensor([True, True, False, False])
    x = torch.tensor([[0.0, 1.0, 5.0, 0.0]], requires_grad=True)
    assert learner.predict(x, None).tolist() == [2]  # the largest logit of all classes
    restricted = learner.restrict(learner.logits(x, None))
    assert restricted.argmax(1).tolist() == [1]
    loss = F.cross_entropy(restricted, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and x.grad[0, 2:].eq(0).all() and x.grad[0, :2].ne(0).all()
    learner.seen_classes = None  # the default: every class
    assert torch.equal(learner.restrict(x), x)


def test_a_phase_resumed_mid_way_keeps_its_classes(tmp_path):
    """The classes met are set again when a stopped phase resumes (it skips the phase start): same metrics."""
    job = [*JOB, "trainer.steps_per_task=300"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(*job, f"run_dir={full}").returncode == 0
    code, out = signal_mid_phase([*job, f"run_dir={cut}"], signal.SIGTERM, after="phase 1/5")
    assert code == 1 and "checkpointing at phase 2, batch" in out, out[-3000:]
    resumed = run_cli(*job, f"run_dir={cut}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert results(cut) == results(full)
