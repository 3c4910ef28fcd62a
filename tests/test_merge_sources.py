"""Where `cltrain merge` finds task vectors besides the merge learner: any run's per-phase weights
(trainer.keep_phase_weights) and TAME's experts; validation-split refusals. Real MNIST, real runs."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import QUICK

pytestmark = pytest.mark.usefixtures("one_thread")

# 2 split-MNIST tasks met in the order [1, 0], fine-tuning, per-phase weights kept, 10 % held out.
FINETUNE = ["merging/split_mnist", *QUICK, "stream.n_tasks=2", "stream.order=[1,0]", "trainer.keep_phase_weights=true",
            "trainer.steps_per_task=30"]
# TAME on 2 split-MNIST tasks (task-agnostic; the shape of conftest.TAME_RECURRING, under which the detector fires),
# 10 % of each task held out for validation.
TAME = ["tame/split_mnist", "stream.n_tasks=2", "stream.train_per_task=2000", "stream.test_per_task=500",
        "stream.val_fraction=0.1", "trainer.epochs_per_task=6", "learner.window=30", "learner.selector_capacity=1000",
        "learner.prune_capacity=1000", "learner.expert_prune_epochs=3", "learner.selector_epochs=8",
        "learner.eval_selector_epochs=3", "trainer.progress_bar=false", "logger.wandb.mode=disabled"]


def _read(path):
    return json.loads(path.read_text())


def _weights(path):
    return torch.load(path, map_location="cpu")


def _one_line(main, capsys, args):
    code = main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (args, lines)
    return lines[0]


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory):
    from cltrain.cli import main

    run = tmp_path_factory.mktemp("phases") / "run"
    assert main(["fit", *FINETUNE, f"run_dir={run}"]) == 0
    return run


def test_kept_phase_weights_are_the_seeded_start_and_the_network_after_each_phase(finetune_run):
    from cltrain.merging.offline import evaluator, network_builder, test_accuracy

    ckpt = finetune_run / "checkpoints"
    learner, stream, cfg = evaluator(finetune_run)
    start = network_builder(cfg, stream)(0).state_dict()  # the run's seeded initialisation
    assert all(torch.equal(v, _weights(ckpt / "phase_start.pt")[k]) for k, v in start.items())
    last = torch.load(ckpt / "last.pt", map_location="cpu", weights_only=False)["learner"]
    assert all(torch.equal(v, last[f"model.{k}"]) for k, v in _weights(ckpt / "phase_1.pt").items())
    # phase k's weights score what the accuracy matrix recorded after phase k
    R = _read(finetune_run / "metrics.json")["acc_matrix"]
    for k in range(2):
        learner.model.load_state_dict(_weights(ckpt / f"phase_{k}.pt"))
        assert [round(test_accuracy(learner, stream, t), 6) for t in range(2)] == [round(a, 6) for a in R[k]]


def test_cltrain_merge_takes_a_finetune_runs_phases_as_task_vectors(finetune_run):
    from cltrain.cli import main

    ckpt, out = finetune_run / "checkpoints", finetune_run / "avg"
    p0, p1, start = (_weights(ckpt / f) for f in ("phase_0.pt", "phase_1.pt", "phase_start.pt"))
    # picked from the run (finetune has no source of its own; it kept its phases); average at lam 1: the mean
    assert main(["merge", str(finetune_run), "method=average", "lam=1", f"out={out}"]) == 0
    result, merged = _read(out / "merge.json"), _weights(out / "model.pt")
    assert result["source"] == "phases" and result["val_acc"] is None
    assert all(torch.allclose(merged[k], (p0[k] + p1[k]) / 2, atol=1e-6) for k in start)
    # the order was [1, 0]: phase 0's vector is task 1's expert, and scores what the matrix said after phase 0
    R = _read(finetune_run / "metrics.json")["acc_matrix"]
    assert result["task_to_vector"] == {"0": 1, "1": 0}
    assert result["expert_acc"] == pytest.approx([R[1][0], R[0][1]], abs=1e-6)
    # relative to a given base (phase 0's weights): task arithmetic at lam 1 gives phase 1's weights
    assert main(["merge", str(finetune_run), f"base={ckpt / 'phase_0.pt'}", "lam=1", f"out={out}2"]) == 0
    merged = _weights(out.with_name("avg2") / "model.pt")
    assert all(torch.allclose(merged[k], p1[k], atol=1e-6) for k in start)
    # lam and the density chosen on the validation split: its rows are counted in merge.json
    assert main(["merge", str(finetune_run), "method=ties", "density_grid=[0.2,0.5]", "val_per_task=50",
                 f"out={out}3"]) == 0
    ties = _read(out.with_name("avg3") / "merge.json")
    assert ties["val_rows_per_task"] == [50, 50] and ties["options"]["density"] in (0.2, 0.5)
    assert ties["val_acc"] is not None and ties["lam"] in [0.25, 0.5, 0.75, 1.0, 1.5]


def test_runs_with_nothing_to_merge_or_no_validation_split_get_one_line_and_exit_2(finetune_run, tmp_path, capsys):
    from cltrain.cli import main

    plain = tmp_path / "plain"
    args = [a for a in FINETUNE if a != "trainer.keep_phase_weights=true"]
    assert main(["fit", *args, "stream.val_fraction=0", "trainer.steps_per_task=2", f"run_dir={plain}"]) == 0
    capsys.readouterr()
    assert "nothing to merge" in _one_line(main, capsys, ["merge", str(plain)])
    assert "phase_start" in _one_line(main, capsys, ["merge", str(plain), "source=phases"])
    assert "tame" in _one_line(main, capsys, ["merge", str(finetune_run), "source=tame"])
    assert "base" in _one_line(main, capsys, ["merge", str(finetune_run), "base=/no/such.pt"])
    not_weights = tmp_path / "notes.txt"
    not_weights.write_text("not a state dict")
    assert "state dict" in _one_line(main, capsys, ["merge", str(finetune_run), "lam=1", f"base={not_weights}"])
    assert "density_grid" in _one_line(main, capsys, ["merge", str(finetune_run), "method=average",
                                                      "density_grid=[0.2]"])
    assert "val_per_task" in _one_line(main, capsys, ["merge", str(finetune_run), "lam=1", "val_per_task=7"])
    # a run without a validation split: lam cannot be chosen, AdaMerging has no inputs
    noval = tmp_path / "noval"
    assert main(["fit", *FINETUNE, "stream.val_fraction=0", "trainer.steps_per_task=2", f"run_dir={noval}"]) == 0
    capsys.readouterr()
    for extra in ([], ["method=adamerging"], ["method=ties", "lam=1", "density_grid=[0.2]"]):
        assert "val_fraction" in _one_line(main, capsys, ["merge", str(noval), *extra])
    assert main(["merge", str(noval), "lam=1", f"out={tmp_path / 'fixed'}"]) == 0  # nothing chosen: fine
    assert not (noval / "merged").exists()


def test_keep_phase_weights_is_refused_for_a_learner_without_one_network(tmp_path, capsys):
    from cltrain.cli import main

    line = _one_line(main, capsys, ["fit", *TAME, "trainer.keep_phase_weights=true", f"run_dir={tmp_path / 'r'}"])
    assert "keep_phase_weights" in line and not (tmp_path / "r").exists()


def test_cltrain_merge_takes_tames_experts(tmp_path):
    from cltrain.cli import main
    from cltrain.merging.offline import evaluator, network_builder
    from cltrain.merging.sources import SOURCES, RunView

    run = tmp_path / "tame"
    assert main(["fit", *TAME, f"run_dir={run}"]) == 0
    m = _read(run / "metrics.json")
    learner, stream, cfg = evaluator(run)
    build = network_builder(cfg, stream)
    experts = SOURCES.get("tame")().load(RunView(run, cfg, stream, build))
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["learner"]
    assert len(experts.vectors) == m["n_experts"] == 2, m.get("warnings")  # a shift detected: two experts
    assert experts.owners == {int(t): j for t, j in m["task_to_expert"].items()}
    for j, tau in enumerate(experts.vectors):  # expert j = its own seeded initialisation + its vector
        init = build(j).state_dict()
        assert all(torch.allclose(init[k] + tau[k], state[f"experts.{j}.{k}"]) for k in tau)
    # picked from the run's learner; lam chosen on the validation split
    assert main(["merge", str(run), "val_per_task=50"]) == 0
    result = _read(run / "merged" / "task_arithmetic" / "merge.json")
    assert result["source"] == "tame" and result["val_acc"] is not None
    assert result["val_rows_per_task"] == [50] * len(experts.owners)


def test_kept_phase_weights_after_a_kill_and_resume_equal_an_uninterrupted_runs(tmp_path):
    """A kill after phase 1 of 2, then resume=true: the start and both phases' weights are the uninterrupted
    run's (the start file is written once, at the first phase's start, and a resumed run does not rewrite it)."""
    import signal

    from conftest import kill_after, run_cli

    job = ["fit", *FINETUNE, "trainer.steps_per_task=200"]  # long enough to kill between the phases
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli(*job, f"run_dir={full}").returncode == 0
    assert kill_after([*job, f"run_dir={killed}"], "phase 1/2") == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before the kill; the test proves nothing"
    assert run_cli(*job, f"run_dir={killed}", "resume=true").returncode == 0
    for name in ("phase_start.pt", "phase_0.pt", "phase_1.pt"):
        a, b = _weights(full / "checkpoints" / name), _weights(killed / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
