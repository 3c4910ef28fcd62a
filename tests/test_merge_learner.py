"""The merge learner on real MNIST, `cltrain merge` over its experts, resume, and their bad input."""
from __future__ import annotations

import json
import signal

import pytest
import torch

from conftest import QUICK, kill_after, results, run_cli
from test_bad_inputs import refused

pytestmark = pytest.mark.usefixtures("one_thread")

# 3 permuted-MNIST tasks of 2,000 images (200 held out as each task's validation split), TIES, lam chosen on
# the validation rows (val_per_task=300: all 200 of them).
JOB = ["merging/pmnist_merge", *QUICK, "learner.method=ties", "learner.density=0.3", "learner.val_per_task=300"]


@pytest.fixture(scope="module")
def ties_run(tmp_path_factory):
    from cltrain.cli import main

    run = tmp_path_factory.mktemp("merge") / "run"
    assert main(["fit", *JOB, f"run_dir={run}"]) == 0
    return run


def _read(path):
    return json.loads(path.read_text())


def test_merge_learner_merges_at_every_boundary(ties_run):
    m = _read(ties_run / "metrics.json")
    R = m["acc_matrix"]
    assert len(R) == 3 and len(m["merge_lams"]) == 3
    assert all(lam in [0.25, 0.5, 0.75, 1.0, 1.5] for lam in m["merge_lams"])
    assert all(0.0 <= a <= 1.0 for row in R for a in row) and m["acc"] == pytest.approx(sum(R[-1]) / 3)
    # the merged model keeps something of every task: well above chance (0.1) on all three at the end
    assert min(R[-1]) > 0.3, R[-1]
    state = torch.load(ties_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    extra = state["learner"]["_extra_state"]
    assert extra["tasks"] == [0, 1, 2] and len(extra["vectors"]) == 3 and len(extra["val"]) == 3


def test_merge_learner_chooses_lam_on_the_validation_split_only(ties_run):
    """The rows the learner scored lam on are exactly the task's held-out validation rows, never trained on."""
    from cltrain.merging.offline import evaluator, validation_rows

    _, stream, cfg = evaluator(ties_run)
    extra = torch.load(ties_run / "checkpoints" / "last.pt", map_location="cpu",
                       weights_only=False)["learner"]["_extra_state"]
    for x, y, t in extra["val"]:
        task = stream.tasks[t]
        assert len(y) == task.val_idx.numel() == 200
        assert not set(task.val_idx.tolist()) & set(task.train_idx.tolist())
        vx, vy, _ = validation_rows(stream, t, 300, cfg.seed)
        # the same rows (the trainer's loader hands them over in its own shuffled order)
        rows = lambda a, b: sorted(zip(b.tolist(), map(tuple, a.flatten(1).tolist())))  # noqa: E731
        assert rows(x, y) == rows(vx, vy)


def test_cltrain_merge_reproduces_the_learner_and_its_saved_model_evaluates_to_the_recorded_numbers(ties_run):
    from cltrain.cli import main
    from cltrain.merging.offline import evaluator, test_accuracy

    # the run's own method and options, lam chosen again on the same validation rows: the learner's last row
    assert main(["merge", str(ties_run), "merge.density=0.3", "val_per_task=300"]) == 0
    out = _read(ties_run / "merged" / "ties" / "merge.json")
    assert out["acc_per_task"] == _read(ties_run / "metrics.json")["acc_matrix"][-1]
    assert 0 < out["normalised_acc"] <= 1.5 and all(a > 0.5 for a in out["expert_acc"])
    # the saved model, loaded into a fresh network, scores exactly what merge.json recorded
    learner, stream, _ = evaluator(ties_run)
    learner.model.load_state_dict(torch.load(ties_run / "merged" / "ties" / "model.pt"))
    assert [test_accuracy(learner, stream, t) for t in range(3)] == out["acc_per_task"]
    # another method and a fixed lam, written where asked
    assert main(["merge", str(ties_run), "method=average", "lam=1.0", f"out={ties_run / 'avg'}"]) == 0
    avg = _read(ties_run / "avg" / "merge.json")
    assert avg["method"] == "average" and avg["lam"] == 1.0 and avg["val_acc"] is None
    # AdaMerging: coefficients learned on the validation rows' inputs (labels unread), applied with lam 1
    assert main(["merge", str(ties_run), "method=adamerging", "merge.coef_steps=20", "merge.coef_lr=0.01",
                 "val_per_task=300", f"out={ties_run / 'ada'}"]) == 0
    ada = _read(ties_run / "ada" / "merge.json")
    assert ada["lam"] == 1.0 and ada["options"]["coef_steps"] == 20 and min(ada["acc_per_task"]) > 0.2


def test_merge_learner_resumes_after_sigkill_to_the_same_metrics(tmp_path):
    job = ["fit", *JOB, "stream.n_tasks=4", "stream.train_per_task=4000", "trainer.epochs_per_task=2"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli(*job, f"run_dir={full}").returncode == 0
    assert kill_after([*job, f"run_dir={killed}"], "phase 1/4") == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before the kill; the test proves nothing"
    resumed = run_cli(*job, f"run_dir={killed}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "phase 1/4" not in resumed.stdout
    assert results(killed) == results(full)


@pytest.mark.parametrize("args, key", [
    (["learner.method=nonsense"], "method"),
    (["learner.method=average", "learner.density=0.5"], "density"),  # average reads no density: ignored
    (["learner.method=ties", "learner.drop_low=0.5"], "drop_low"),
    (["learner.method=breadcrumbs", "learner.drop_low=0.6", "learner.drop_high=0.5"], "drop_low"),  # nothing left
    (["learner.lam=0"], "lam"),
    (["learner.lam=-1"], "lam"),
    (["learner.lam=1", "learner.lam_grid=[0.5,1]"], "lam_grid"),  # a fixed lam would ignore the grid
    (["learner.lam_grid=[0,1]"], "lam_grid"),
    (["learner.base=/no/such/file.pt"], "base"),
    (["learner.method=adamerging", "learner.lam=1"], "lam"),
    (["learner.method=ties", "learner.coef_steps=5"], "coef_steps"),  # ties learns no coefficients: ignored
    (["stream.presentation=task_agnostic"], "presentation"),
    (["learner.lam=1", "learner.val_per_task=10"], "val_per_task"),  # nothing is chosen on data: ignored
    (["stream.val_fraction=0"], "val_fraction"),  # lam=null: chosen on the validation split, and there is none
    (["stream.val_fraction=0", "learner.method=adamerging"], "val_fraction"),  # no inputs to learn on
])
def test_bad_merge_learner_options_get_one_line_and_exit_2(tmp_path, capsys, args, key):
    from cltrain.cli import main

    refused(main, capsys, tmp_path, ["learner.name=merge", "stream.val_fraction=0.1", *args], key)


def test_a_fixed_lam_needs_no_validation_split(tmp_path):
    from cltrain.cli import main

    assert main(["fit", *JOB[:-3], "stream.val_fraction=0", "learner.lam=1", "stream.n_tasks=2",
                 "trainer.steps_per_task=2", f"run_dir={tmp_path / 'run'}"]) == 0


def test_bad_cltrain_merge_requests_get_one_line_and_exit_2(ties_run, tmp_path, capsys):
    from cltrain.cli import main

    cases = [
        ([str(ties_run), "method=nope"], "method"),
        ([str(ties_run), "merge.density=2"], "density"),
        ([str(ties_run), "merge.density=0"], "density"),
        ([str(ties_run), "method=average", "merge.density=0.5"], "density"),  # average takes no options
        ([str(ties_run), "merge.no_such=1"], "no_such"),
        ([str(ties_run), "lam=-1"], "lam"),
        ([str(ties_run), "lam=nan"], "lam"),
        ([str(ties_run), "bogus=1"], "bogus"),
        ([str(ties_run), "method=adamerging", "lam=1"], "lam"),  # it learns its own coefficients
        ([str(ties_run), "lam_grid=[]"], "lam_grid"),  # no point to choose
        ([str(ties_run), "method=ties", "density_grid=[]"], "density_grid"),
        ([str(tmp_path / "nothing")], "run folder"),
    ]
    for args, key in cases:
        code = main(["merge", *args, f"out={tmp_path / 'out'}"])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and key in lines[0], (args, lines)
        assert not (tmp_path / "out").exists()


def test_cltrain_merge_refuses_a_run_without_task_vectors(tmp_path, capsys):
    from cltrain.cli import main

    run = tmp_path / "running"
    assert main(["fit", *JOB[:-3], "learner.method=running_average", "stream.n_tasks=2",
                 "trainer.steps_per_task=2", f"run_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["merge", str(run)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no task vectors" in lines[0], lines


def test_adamerging_and_running_average_along_the_stream(tmp_path):
    """The data-driven and the streaming method through the learner: AdaMerging's lam is always 1 (it learns
    its coefficients); running_average keeps one merged vector and no task vectors."""
    from cltrain.cli import main

    base = [*JOB[:-3], "stream.n_tasks=3", "trainer.epochs_per_task=2", "learner.val_per_task=200"]
    assert main(["fit", *base, "learner.method=adamerging", "learner.coef_steps=10", "learner.coef_lr=0.01",
                 f"run_dir={tmp_path / 'ada'}"]) == 0
    m = _read(tmp_path / "ada" / "metrics.json")
    # the merged model has learned: its mean accuracy is well above the untrained network's (about chance)
    assert m["merge_lams"] == [1.0, 1.0, 1.0] and m["acc"] > sum(m["acc_init"]) / 3 + 0.2, m["acc_matrix"]
    assert main(["fit", *base, "learner.method=running_average", f"run_dir={tmp_path / 'run'}"]) == 0
    extra = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu",
                       weights_only=False)["learner"]["_extra_state"]
    assert extra["vectors"] == [] and extra["fold_state"]["count"] == 3


def test_merge_learner_under_ddp_merges_the_same_on_both_ranks(tmp_path):
    """2 gloo processes: every rank takes the same seeded validation samples and merges the same vectors, so the
    weights agree after every merge (ddp_weights_agree fails when they do not) and the run matches one process."""
    from test_ddp import single_and_ddp

    a, b = single_and_ddp(tmp_path, "fit", *JOB, "stream.train_per_task=1001", "model.hidden=[100,100]")
    assert b["ddp_weights_agree"] is True and len(b["merge_lams"]) == 3
    # measured: identical ACC and lams (0.2467, [1.5, 1.5, 1.5]); a tolerance for all-reduce rounding
    assert b["acc"] == pytest.approx(a["acc"], abs=0.02), (a["acc_matrix"], b["acc_matrix"])
