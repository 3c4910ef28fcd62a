"""`cltrain keep`: a finished run's records, copied without its checkpoints, are enough to report it and for a
reproduction to reuse it (a real 3-task MNIST run through the real CLI), and a conflicting copy stops the command
before anything is written."""
import argparse
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from cltrain.cli import main
from conftest import QUICK, REPO, load_script, run_cli


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run = runs / "pmnist" / "finetune_s0"
    done = run_cli("fit", "baselines/pmnist", *QUICK, "trainer.steps_per_task=30", "stream.test_per_task=200",
                   f"run_dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    return runs, run


def test_kept_records_report_and_are_reused_like_the_run(finished, tmp_path, capsys):
    runs, run = finished
    kept = tmp_path / "kept"
    assert main(["keep", str(runs), "--to", str(kept)]) == 0
    copy = kept / "pmnist" / "finetune_s0"
    texts = sorted(p.name for p in run.iterdir() if p.suffix in (".json", ".yaml", ".csv"))
    assert {"config.yaml", "metrics.csv", "metrics.json"} <= set(texts) and (run / "checkpoints").is_dir()
    assert "kept the records of 1 run under" in capsys.readouterr().out
    assert sorted(p.name for p in copy.iterdir()) == texts  # no checkpoints, logs or plots
    assert json.loads((copy / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())

    # the report over the records alone is the report over the run
    assert main(["report", str(run), "--select", "val", "--tune", "optim.lr"]) == 0
    from_run = capsys.readouterr().out
    assert main(["report", str(copy), "--select", "val", "--tune", "optim.lr"]) == 0
    assert capsys.readouterr().out == from_run and "ACC" in from_run

    # brought back to a fresh runs folder, the reproduction takes it as finished with the same config
    fresh = tmp_path / "fresh"
    assert main(["keep", str(kept), "--to", str(fresh)]) == 0
    rb = load_script("reproduce_baselines")
    keys = [*QUICK, "trainer.steps_per_task=30", "stream.test_per_task=200", "seed=0"]
    assert rb.finished_elsewise("baselines/pmnist", keys, fresh / "pmnist" / "finetune_s0") == []
    assert rb.finished_elsewise("baselines/pmnist", [*keys, "optim.lr=0.5"], fresh / "pmnist" / "finetune_s0")


def test_keeping_again_copies_nothing_and_a_conflict_copies_nothing(finished, tmp_path, capsys):
    runs, run = finished
    kept = tmp_path / "kept"
    assert main(["keep", str(run), "--to", str(kept)]) == 0  # a run given itself keeps its name
    assert (kept / "finetune_s0" / "metrics.json").exists()
    capsys.readouterr()
    assert main(["keep", str(run), "--to", str(kept)]) == 0
    assert "nothing new to keep" in capsys.readouterr().out

    other = tmp_path / "other" / "finetune_s0"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (other / "metrics.csv").unlink()
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "acc": 0.5}))
    assert main(["keep", str(other), "--to", str(kept)]) == 2
    err = capsys.readouterr().err
    assert "differ from the runs'" in err and "finetune_s0/metrics.json" in err
    assert json.loads((kept / "finetune_s0" / "metrics.json").read_text())["acc"] == metrics["acc"]


def test_logs_go_only_when_asked_and_come_back_with_the_run(finished, tmp_path, capsys):
    """--logs keeps the Lightning CSV log (the training-time figures the TAME page reads) beside the records; a
    run kept without it gains it later without a conflict, and bringing runs back brings their logs."""
    runs, run = finished
    log = next(run.glob("logs/*/metrics.csv"))
    assert "train/loss" in log.read_text().splitlines()[0]  # what the TAME page reads from it
    kept = tmp_path / "kept"
    assert main(["keep", str(run), "--to", str(kept)]) == 0
    assert not (kept / "finetune_s0" / "logs").exists()
    capsys.readouterr()
    assert main(["keep", str(run), "--to", str(kept), "--logs"]) == 0  # adds the log, nothing else changes
    copy = kept / "finetune_s0" / log.relative_to(run)
    assert copy.read_text() == log.read_text()
    assert "kept the records of 1 run" in capsys.readouterr().out
    from cltrain.keep import bring_back

    fresh = tmp_path / "fresh"
    assert bring_back(kept, fresh) == 1
    assert (fresh / "finetune_s0" / log.relative_to(run)).read_text() == log.read_text()
    assert not (fresh / "finetune_s0" / "checkpoints").exists()


def test_bad_places_are_usage_errors(finished, tmp_path, capsys):
    runs, _ = finished
    assert main(["keep", str(tmp_path / "nope"), "--to", str(tmp_path / "kept")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["keep", str(runs), "--to", str(runs / "kept")]) == 2
    assert "contain one another" in capsys.readouterr().err
    assert not (runs / "kept").exists()
    (tmp_path / "empty").mkdir()
    assert main(["keep", str(tmp_path / "empty"), "--to", str(tmp_path / "kept")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_a_reproduction_keeps_each_run_as_it_finishes_and_reuses_kept_ones(tmp_path):
    """scripts/reproduce_baselines.py --keep (also baselines_protocol.py and split_factor.py): a real run through the
    script's own job runner, its records kept; on a 'new machine' (the runs folder gone) they come back and the
    run is not made again."""
    rb = load_script("reproduce_baselines")
    runs, kept = tmp_path / "machine" / "baselines", tmp_path / "kept" / "baselines"  # a kept folder per runs folder
    run = runs / "pmnist_30" / "domain_incremental" / "finetuning_s0"
    job = ("pmnist", "domain_incremental", 30, rb.BENCHMARKS["pmnist"].methods["fine-tuning"][0], 0, run,
           (*QUICK, "stream.test_per_task=200"))
    rb.run_all([job], 1, (runs, kept))
    copy = kept / "pmnist_30" / "domain_incremental" / "finetuning_s0"
    assert json.loads((copy / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())
    assert not (copy / "checkpoints").exists()

    shutil.rmtree(runs)
    args = SimpleNamespace(keep=str(kept))
    assert rb.kept_runs(argparse.ArgumentParser(), args, runs) == (runs, kept.resolve())
    assert rb.fit(*job) == "finetuning_s0: done before"
    assert not (run / "checkpoints").exists()  # reused, not run again
    assert rb.kept_runs(argparse.ArgumentParser(), SimpleNamespace(keep=None), runs) is None


@pytest.mark.parametrize("script, args", [
    ("reproduce_baselines.py", ["--doc-only"]),
    ("baselines_protocol.py", ["--doc-only"]),
    ("split_factor.py", ["pixels", "--doc-only"]),
    ("reproduce_powerlaw.py", ["--report-only"]),
])
def test_a_page_is_never_rewritten_from_no_runs(tmp_path, script, args):
    """On a new machine (no runs) a --doc-only leaves the committed page as it is and says how to bring kept runs
    back, instead of replacing the page's results with empty tables."""
    page = tmp_path / "page.md"
    page.write_text("the committed results\n")
    other = tmp_path / "runs" / "other_script" / "x"  # another script's runs under the same --runs do not count
    other.mkdir(parents=True)
    (other / "metrics.json").write_text("{}")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args, "--runs", str(tmp_path / "runs"),
                           "--out", str(page)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert ("no finished runs under" in done.stderr or "are not finished under" in done.stderr), done.stderr
    assert "--keep docs/results/runs/" in done.stderr
    assert page.read_text() == "the committed results\n"
    nowhere = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args, "--runs", str(tmp_path / "runs"),
                              "--out", str(tmp_path / "no_such" / "page.md")], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert nowhere.returncode == 2 and "a folder that exists" in nowhere.stderr  # said before any run, not after


def test_a_script_whose_runs_folder_holds_another_run_of_a_kept_name_stops_with_exit_2(finished, tmp_path, capsys):
    """--keep (cltrain.keep.from_option) brings nothing back over a different run: a usage error, both untouched."""
    from cltrain.keep import from_option

    runs, run = finished
    kept = tmp_path / "kept" / "runs"
    assert main(["keep", str(runs), "--to", str(kept)]) == 0
    here = tmp_path / "runs" / "pmnist" / "finetune_s0"
    here.mkdir(parents=True)
    (here / "config.yaml").write_text("seed: 7\n")  # an unfinished run of another config under the same name
    with pytest.raises(SystemExit) as stop:
        from_option(argparse.ArgumentParser(), str(kept), tmp_path / "runs")
    assert stop.value.code == 2 and "differ from the runs'" in capsys.readouterr().err
    assert (here / "config.yaml").read_text() == "seed: 7\n" and not (here / "metrics.json").exists()
    assert from_option(argparse.ArgumentParser(), None, tmp_path / "runs") is None
    # comparison runs (--runs .../padded) kept into the page's folder would be mixed into it, then brought back
    with pytest.raises(SystemExit) as stop:
        from_option(argparse.ArgumentParser(), str(kept), tmp_path / "padded")
    assert stop.value.code == 2 and "named like the runs folder 'padded'" in capsys.readouterr().err


def test_dot_keeps_its_folders_name(finished, tmp_path, monkeypatch):
    runs, run = finished
    monkeypatch.chdir(run)
    assert main(["keep", ".", "--to", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "finetune_s0" / "metrics.json").exists()


def test_the_power_law_page_dates_runs_by_their_recorded_finish_not_by_file_time(tmp_path):
    """Runs brought back from git have the checkout's file times; the page reads each run's `finished_utc`."""
    doc = load_script("powerlaw_doc")
    for name, finished in (("a", "2026-11-28T17:38:05Z"), ("b", "2026-11-29T01:20:59Z"), ("c", None)):
        run = tmp_path / "main" / name
        run.mkdir(parents=True)
        record = {"acc": 0.5} if finished is None else {"acc": 0.5, "finished_utc": finished}
        (run / "metrics.json").write_text(json.dumps(record))
    assert doc._run_dates(tmp_path) == ("finished between 2026-11-28 17:38 UTC and 2026-11-29 01:20 UTC "
                                        "(1 without a recorded time)")
    (tmp_path / "main" / "a" / "metrics.json").write_text("{}")
    (tmp_path / "main" / "b" / "metrics.json").write_text("{}")
    assert doc._run_dates(tmp_path).startswith("finish times not recorded")


@pytest.mark.parametrize("script_name, seeds", [("reproduce_merging", [0, 1]), ("reproduce_l2m", 2)])
def test_merging_and_l2m_pages_name_the_runs_they_lack(tmp_path, script_name, seeds):
    """--report-only refuses (exit 2, the page left as it is) while missing_runs names any: on a new machine
    merging.md was rewritten as dashes and l2m.md ended in a traceback."""
    script = load_script(script_name)
    everything = script.missing_runs(tmp_path, seeds)
    assert len(everything) >= 4
    first = tmp_path / everything[0]
    first.mkdir(parents=True)
    (first / "metrics.json").write_text("{}")
    assert script.missing_runs(tmp_path, seeds) == everything[1:]
