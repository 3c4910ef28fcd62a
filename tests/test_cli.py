"""The CLI contract (DESIGN.md): run-folder files, exit codes, one-line errors. Real MNIST, real Lightning."""
import calendar
import json
import time

import yaml

from conftest import QUICK, run_cli



def test_fit_writes_every_run_folder_file(tmp_path):
    run = tmp_path / "run"
    started = time.time()
    proc = run_cli("fit", "bench/pmnist_naive", *QUICK, f"run_dir={run}", "logger.wandb.mode=offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "metrics.json", "metrics.csv", "acc_matrix.png", "retention.png",
                 "schedule_counts.csv", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["acc_matrix"]) == 3 and all(len(row) == 3 for row in metrics["acc_matrix"])
    for key in ("acc", "bwt", "fwt", "forgetting", "wall_time_s"):
        assert isinstance(metrics[key], float)
    assert metrics["acc_matrix"][0][0] > 0.5  # the first task was really learned (chance: 0.1)
    finished = calendar.timegm(time.strptime(metrics["finished_utc"], "%Y-%m-%dT%H:%M:%SZ"))
    assert started - 1 <= finished <= time.time() + 1  # when this run ended, in UTC
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["stream"]["n_tasks"] == 3 and config["learner"]["name"] == "finetune"
    assert config["run_dir"] == str(run)
    # wandb ran for real, offline, inside the run folder
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert "phase 3/3" in proc.stdout and "ACC" in proc.stdout


def _error_line(proc):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unknown_key_exits_2_naming_it_and_the_valid_keys(tmp_path):
    proc = run_cli("fit", "bench/pmnist_naive", "trainer.epochs=3", f"run_dir={tmp_path}/r")
    assert proc.returncode == 2
    line = _error_line(proc)
    assert "trainer.epochs" in line and "epochs_per_task" in line and "batch_size" in line
    assert not (tmp_path / "r").exists()  # nothing was started


def test_bad_values_exit_2_with_the_valid_choices(tmp_path, capsys):
    """In-process through cli.main (the console script's entry point) to keep the suite fast."""
    from cltrain.cli import main

    cases = [
        ("bench/pmnist_naive", "logger.wandb.mode=sometimes", "offline, online, disabled"),
        ("bench/pmnist_naive", "learner.name=magic", "not a known learner; valid: ewc, finetune"),
        ("bench/pmnist_naive", "stream.name=spiral", "permuted, rotated, split"),
        ("bench/pmnist_naive", "stream.dataset=svhn", "cifar10, cifar100, fashion_mnist, mnist"),
        ("bench/pmnist_naive", "trainer.batch_size=lots", "trainer.batch_size"),
        ("bench/pmnist_naive", "trainer.batch_size=0", "1 <= batch_size"),
        ("bench/pmnist_naive", "learner.lam=3", "'learner' takes no options"),
        ("bench/pmnist_ewc", "learner.lambda=3", "valid keys under 'learner': lam, mode"),
        ("bench/pmnist_ewc", "learner.mode=sometimes", "offline, online"),
        ("bench/pmnist_ewc", "learner.fisher_labels=sampled", "true, predicted"),
        ("bench/pmnist_ewc", "learner.mode=offline learner.gamma=0.9", "1.0 with learner.mode=offline"),
        ("bench/pmnist_naive", "plugins.replay.size=10", "capacity"),
        ("bench/pmnist_naive", "plugins.dropout.p=1", "replay"),
        ("bench/pmnist_naive", "stream.order=[0,0,1]", "covering 0..9"),
        ("bench/pmnist_naive", "seed", "key=value"),
        ("tame/split_mnist", "trainer.devices=2 trainer.strategy=ddp_spawn", "valid: auto, ddp"),
        ("bench/pmnist_naive", "model.options.width=3", "valid keys under 'model.options': pretrained"),
        ("bench/pmnist_naive", "model.name=lenet model.options.width=3", "'model.options' is not read by"),
        ("l2m/l2m", "learner.pool_size=0", "'learner.pool_size'; valid: 1 <= pool_size"),
        ("l2m/l2m", "stream.options.context=0", "'stream.options.context'"),
        ("l2m/l2m", "stream.n_tasks=11", "valid: 1..10"),
        ("l2m/l2p", "model.name=mlp", "valid: dt"),
        ("l2m/l2m_oracle", "learner.pool_size=5", "pool_size >= 9"),
    ]
    for experiment, override, expected in cases:
        code = main(["fit", experiment, *override.split(" "), f"run_dir={tmp_path}/r"])
        err = capsys.readouterr().err.strip()
        assert code == 2, (override, err)
        assert len(err.splitlines()) == 1 and expected in err, (override, err)
    assert not (tmp_path / "r").exists()


def test_unknown_experiment_lists_the_known_ones():
    proc = run_cli("fit", "bench/nope")
    assert proc.returncode == 2
    assert "bench/pmnist_naive" in _error_line(proc)


def test_missing_data_exits_2_naming_the_folder(tmp_path):
    proc = run_cli("fit", "bench/pmnist_naive", *QUICK, f"run_dir={tmp_path}/r", "data.download=false",
                   env={"CLTRAIN_DATA": str(tmp_path / "empty")})
    assert proc.returncode == 2
    assert str(tmp_path / "empty" / "MNIST" / "raw") in _error_line(proc)


def test_an_existing_run_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    args = ("fit", "bench/pmnist_naive", *QUICK, "stream.n_tasks=2", f"run_dir={run}")
    assert run_cli(*args).returncode == 0
    before = (run / "metrics.json").read_text()
    proc = run_cli(*args)
    assert proc.returncode == 2 and "resume=true" in _error_line(proc)
    assert (run / "metrics.json").read_text() == before


def test_resume_with_another_experiment_is_refused(tmp_path):
    run = tmp_path / "run"
    assert run_cli("fit", "bench/pmnist_naive", *QUICK, "stream.n_tasks=2", f"run_dir={run}").returncode == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    proc = run_cli("fit", "bench/pmnist_naive", *QUICK, "stream.n_tasks=2", "optim.lr=0.5", f"run_dir={run}",
                   "resume=true")
    assert proc.returncode == 2
    assert "optim.lr: 0.01 -> 0.5" in _error_line(proc)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # nothing finished is touched
