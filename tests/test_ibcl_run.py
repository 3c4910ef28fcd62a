"""IBCL on real MNIST features through the real CLI: fit, figures, kill + resume, substitution on a repeated task,
zero-shot models without an optimizer step, and `cltrain ibcl-model` with its bad inputs."""
import json
import signal

import pytest
import torch

from conftest import kill_after, results, run_cli, signal_mid_phase

QUICK_IBCL = ["stream.train_per_task=2000", "stream.test_per_task=500", "trainer.progress_bar=false",
              "logger.wandb.mode=disabled"]
# d = 0: with 64 steps a task, posteriors of different tasks can lie within the default d (substitution: below)
PAIRS3 = ("fit", "ibcl/mnist_pairs", *QUICK_IBCL, "stream.n_tasks=3", "learner.d=0")
def _metrics(run):
    return results(run)


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ibcl") / "full"
    result = run_cli(*PAIRS3, f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_fit_writes_ibcl_figures(pairs_run):
    m = _metrics(pairs_run)
    assert len(m["acc_matrix"]) == 3 and m["ibcl_buffer_size"] == [3, 6, 9]  # distinct tasks all stored
    assert m["cost"]["ibcl"] == {"trained_models": 9, "gradient_steps": m["steps"], "models_trained_per_preference": 0}
    for key in ("ibcl_pref_acc_mean_model", "ibcl_pref_acc_picked", "ibcl_paper_avg_acc", "ibcl_paper_peak_acc"):
        assert len(m[key]) == 3 and all(0.5 < v <= 1 for v in m[key]), key
    # each task's one-hot preference model, right after learning it, is far above chance (0.5). Measured at seed 0:
    # 0.998, 0.842, 0.96 on one machine and 0.994, 0.686, 0.938 on another (other floats from the same code; task 1,
    # 2 vs 3, is the hardest pair on these features; seeds 1-3 there: 0.856-0.89), so one task's figure at one seed
    # is no sharper a test than this: every task above 0.6, their mean above 0.8
    right_after = [m["ibcl_onehot_acc"][k][str(k)] for k in range(3)]
    assert min(right_after) > 0.6 and sum(right_after) / 3 > 0.8, m["ibcl_onehot_acc"]
    assert m["ibcl_paper_peak_acc"][-1] >= m["ibcl_paper_avg_acc"][-1] >= m["ibcl_paper_low_acc"][-1]
    assert len(m["ibcl_pareto"]["points"]) == 9 and len(m["ibcl_pareto"]["points"][0]["samples"]) == 10
    assert (pairs_run / "ibcl_pareto.png").stat().st_size > 0 and (pairs_run / "ibcl_buffer.png").stat().st_size > 0


def test_kill_and_resume_gives_identical_metrics(pairs_run, tmp_path):
    killed = tmp_path / "killed"
    assert kill_after([*PAIRS3, f"run_dir={killed}"], "phase 1/3") == -signal.SIGKILL
    assert (killed / "checkpoints" / "last.pt").exists()
    assert not (killed / "metrics.json").exists(), "the run finished before the kill; the test proves nothing"
    resumed = run_cli(*PAIRS3, f"run_dir={killed}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "phase 1/3" not in resumed.stdout
    assert _metrics(killed) == _metrics(pairs_run)


def test_sigterm_mid_phase_and_resume_gives_identical_metrics(tmp_path):
    # longer phases (300 steps) so the signal lands inside phase 2; the weight draws' RNG must survive the stop
    job = ["fit", "ibcl/mnist_pairs", *QUICK_IBCL, "stream.n_tasks=2", "learner.d=0", "trainer.steps_per_task=300"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(*job, f"run_dir={full}").returncode == 0
    code, out = signal_mid_phase([*job, f"run_dir={cut}"], signal.SIGTERM, after="phase 1/2")
    assert code == 1 and "checkpointing at phase 2, batch" in out, out
    resumed = run_cli(*job, f"run_dir={cut}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(cut) == _metrics(full)


def test_repeated_task_is_substituted_at_d_above_zero_and_stored_at_d_zero(tmp_path):
    # Task 1 met twice. Measured on this seed: a chain's posterior moves by 0.027-0.033 (normalised W2) on a
    # new task and by 0.011-0.014 when the same task comes again; d = 0.02 lies between.
    job = ("fit", "ibcl/mnist_pairs", *QUICK_IBCL, "stream.n_tasks=2", "stream.order=[0,1,1]",
           "trainer.epochs_per_task=5")
    sizes = {}
    for d in ("0.02", "0"):
        result = run_cli(*job, f"learner.d={d}", f"run_dir={tmp_path / d}")
        assert result.returncode == 0, result.stderr[-3000:]
        sizes[d] = _metrics(tmp_path / d)["ibcl_buffer_size"]
    assert sizes["0.02"] == [3, 6, 6]  # the new task adds its 3 posteriors, the repeat adds nothing
    assert sizes["0"] == [3, 6, 9]


def test_preference_model_needs_no_optimizer_step_and_favours_its_task(tmp_path):
    from cltrain.learners.ibcl_export import load_run
    from cltrain.learners.ibcl_eval import TaskData, zero_shot

    # "0 vs rest" then "1 vs rest": the tasks disagree (a 0 is positive in one, negative in the other)
    run = tmp_path / "ovr"
    result = run_cli("fit", "ibcl/mnist_one_vs_rest", *QUICK_IBCL, "stream.n_tasks=2", "learner.d=0", f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    cfg, stream, learner = load_run(run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    learner.load_optimizer_state(state["optimizer"])
    optimizer = learner.configure_optimizers()
    steps_before = [float(s["step"]) for s in optimizer.state.values()]
    params_before = [p.detach().clone() for p in learner.parameters()]
    data = TaskData(stream, 2000)
    def model_for(w):  # the zero-shot model IBCL returns: the candidate picked on validation data
        return zero_shot(learner, data, 1, [0, 1], torch.tensor(w, dtype=torch.float64), 0.01, 10,
                         torch.Generator().manual_seed(0))

    favour, against = model_for([0.9, 0.1]), model_for([0.1, 0.9])
    assert steps_before and [float(s["step"]) for s in optimizer.state.values()] == steps_before
    assert all(torch.equal(a, b) for a, b in zip(params_before, learner.parameters()))
    assert all(p.grad is None for p in learner.parameters())
    # The preference steers the model without training: favouring task 0 wins on task 0, favouring task 1 on
    # task 1. Measured at seed 0 (test accuracy of the picks): 0.95 / 0.39 for 0.9/0.1, 0.90 / 0.78 for 0.1/0.9.
    # Against the uniform preference there is no margin to test at this scale: its barycenter already behaves
    # like task 0's posteriors (0.5/0.5 scores 0.93 / 0.45; the trade-off curve is not linear in w).
    fav, aga = favour.test[favour.pick], against.test[against.pick]
    assert float(fav[0]) > float(aga[0]) + 0.02 and float(aga[1]) > float(fav[1]) + 0.1, (fav, aga)


def test_ibcl_model_command_writes_a_model_that_torch_alone_loads(pairs_run, tmp_path):
    out = tmp_path / "m.pt2"
    result = run_cli("ibcl-model", str(pairs_run), "--preference", "0.7,0.3,0", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["optimizer_steps"] == 0 and report["tasks"] == [0, 1, 2]
    # a user loads it with torch alone and gets the reported accuracy on task 0's test features
    from cltrain.config import load_config
    from cltrain.streams.base import STREAMS

    stream = STREAMS.get("binary_pairs")(load_config("ibcl/mnist_pairs", [*QUICK_IBCL, "stream.n_tasks=3"]))
    task = stream.tasks[0]
    x = stream.transform(stream.test.images[task.test_idx], None)
    model = torch.export.load(str(out)).module()
    acc = float(((model(x)[:, 0] > 0).long() == stream.test.labels[task.test_idx]).float().mean())
    assert acc == pytest.approx(report["test_acc"][0], abs=1e-6) and acc > 0.9



def test_ibcl_model_refuses_bad_input_with_one_line_and_exit_2(pairs_run, tmp_path, capsys):
    from cltrain.cli import main  # in-process: the same code path as the command, without a new interpreter

    cases = [(["--preference=0.5,0.5"], "--preference"), (["--preference=-0.2,1.2,0"], "--preference"),
             (["--preference=0.5,0.3,0.1"], "--preference"), (["--preference=a,b,c"], "--preference"),
             (["--preference=1,0,0", "--alpha=1.5"], "--alpha"), (["--preference=1,0,0", "--samples=0"], "--samples")]
    for args, key in cases:
        assert main(["ibcl-model", str(pairs_run), *args]) == 2, args
        err = capsys.readouterr().err
        assert key in err and len(err.strip().splitlines()) == 1, (args, err)
    assert main(["ibcl-model", str(pairs_run), "--preference=0.5,0.5"]) == 2
    assert "has seen tasks [0, 1, 2]" in capsys.readouterr().err  # what the length comes from
    assert main(["ibcl-model", str(tmp_path), "--preference=1"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert not list(pairs_run.glob("ibcl_model_*"))  # nothing written for refused input


@pytest.mark.parametrize("override, key", [
    ("learner.d=-1", "learner.d"), ("learner.alpha=1.5", "learner.alpha"), ("model.name=mlp", "model.name"),
    ("stream.presentation=task_agnostic", "stream.presentation"), ("learner.n_samples=0", "learner.n_samples"),
    ("learner.prior_scales=[]", "learner.prior_scales"), ("learner.pareto_tasks=[0,0]", "learner.pareto_tasks"),
    ("stream.name=permuted", "stream.name"), ("stream.val_fraction=0", "stream.val_fraction"),
])
def test_bad_ibcl_config_is_refused_when_resolved(override, key):
    from cltrain.config import load_config
    from cltrain.errors import ConfigError
    from cltrain.experiment import resolve_components

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_components(load_config("ibcl/mnist_pairs", [override]))


def test_bad_ibcl_config_exits_2_before_any_run_folder(tmp_path, capsys):
    from cltrain.cli import main

    run = tmp_path / "a"
    result = run_cli("fit", "ibcl/mnist_pairs", "learner.d=-1", f"run_dir={run}")
    assert result.returncode == 2 and "learner.d" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run.exists()
    # a stream-level check (too many pairs) also comes before the run folder
    assert main(["fit", "ibcl/mnist_pairs", "stream.n_tasks=6", f"run_dir={tmp_path / 'b'}"]) == 2
    err = capsys.readouterr().err
    assert "stream.n_tasks" in err and "1..5" in err and not (tmp_path / "b").exists()
