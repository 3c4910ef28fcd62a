"""scripts/reproduce_baselines.py's variant comparison pairs each variant run with the 32x32 check of the same
seed, and nothing else (hand-written run folders)."""
import json
from types import SimpleNamespace

import yaml

from conftest import load_script


def script():
    return load_script("reproduce_baselines")


def _run(path, acc, pad):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"stream": {"pad": pad}}))
    (path / "metrics.json").write_text(json.dumps({"acc": acc, "acc_matrix": [[0.9, 0.1], [0.8, 0.95]]}))


def test_variants_pair_runs_of_the_same_seed_on_32x32_inputs(tmp_path):
    checks, variants = tmp_path / "padded" / "pmnist_5000_check", tmp_path / "variants"
    _run(checks / "online_ewc_1000.0_s0", 0.95, 2)
    _run(checks / "online_ewc_1000.0_s1", 0.96, 2)
    _run(checks / "online_ewc_1000.0_s2", 0.99, 0)  # 28x28: not a partner
    gamma = variants / "gamma_0.9" / "pmnist_5000_check"
    _run(gamma / "online_ewc_1000.0_s0", 0.93, 2)
    _run(gamma / "online_ewc_1000.0_s1", 0.95, 2)
    _run(gamma / "online_ewc_1000.0_s2", 0.50, 2)  # its check is 28x28
    _run(gamma / "online_ewc_1000.0_s3", 0.50, 2)  # no check on seed 3
    s, args = script(), SimpleNamespace(check_steps=5000, pmnist_test=2000)
    rows = s.variant_rows(args, tmp_path / "padded", variants)
    found = {key: row for key, row in rows.items() if row is not None}
    assert list(found) == [("gamma_0.9", "online EWC", "1000.0")]  # one variant with runs, one check point
    cells = [c.strip() for c in found["gamma_0.9", "online EWC", "1000.0"].split("|")[1:-1]]
    assert cells[3] == "0, 1"  # seeds paired
    assert cells[4].startswith("95.5 ± 0.7") and cells[5].startswith("94.0 ± 1.4")
    assert cells[6] == "-1.5"  # mean of the per-seed differences (-2, -1)
    # the other variants have no runs: the section is not written, so the page never loses their rows
    assert s.unrun_variants(rows) == ["authors_fisher", "authors_online_ewc"]
    assert s.variants_section(args, rows, variants) == ""
    _run(checks / "ewc_500.0_s0", 0.95, 2)
    _run(variants / "authors_fisher" / "pmnist_5000_check" / "ewc_500.0_s0", 0.94, 2)
    _run(variants / "authors_online_ewc" / "pmnist_5000_check" / "online_ewc_1000.0_s1", 0.94, 2)
    page = s.variants_section(args, s.variant_rows(args, tmp_path / "padded", variants), variants)
    assert [line.split("|")[1].strip() for line in page.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| method")] == ["online EWC", "EWC", "online EWC"]


def _grid_run(base, name, learner, seed, val, acc):
    run = base / name
    run.mkdir(parents=True)
    cfg = {"name": "baselines/split_mnist", "seed": seed, "learner": learner, "stream": {"val_fraction": 0.1}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.json").write_text(json.dumps({
        "acc": acc, "val_acc": val, "acc_matrix": [[0.9, 0.1], [0.8, 0.95]], "val_acc_matrix": [[0.9, 0.1], [0.8, 0.9]],
        "val_acc_init": [0.1, 0.1], "wall_time_s": 100.0}))


def test_doc_draws_each_scenarios_grids_beside_its_table(tmp_path):
    s = script()
    runs, out = tmp_path / "runs", tmp_path / "docs" / "baselines.md"
    out.parent.mkdir()
    base = s.folder(runs, "split_mnist", "task_incremental", 2000)
    _grid_run(base, "finetuning_s0", {"name": "finetune"}, 0, 0.80, 0.79)
    for lam, val in ((1.0, 0.90), (100.0, 0.95)):
        _grid_run(base, f"ewc_{lam}_s0", {"name": "ewc", "mode": "offline", "lam": lam}, 0, val, val - 0.01)
    args = SimpleNamespace(split_steps=2000, pmnist_steps=5000, seeds=[0], tune_seeds=[0], pmnist_test=None,
                           benchmarks=["split_mnist"], standardised_runs=None, padded_runs=None, check_steps=5000,
                           check=[])
    s.write_doc(args, runs, out)
    figure = out.parent / "baselines_split_mnist_task_incremental_grids.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert not list(out.parent.glob("*domain_incremental_grids.png"))  # a scenario not run has no figure
    text = out.read_text()
    section = text.split("### Split MNIST, Task-IL")[1].split("###")[0]
    assert f"]({figure.name})" in section and "learner.lam=100.0" in section


def _pmnist_runs(root, check_pad=None):
    """The table's grid (fine-tuning and two EWC points) under root, and an EWC check at 5,000 iterations."""
    base = script().folder(root, "pmnist", "domain_incremental", 500)
    _grid_run(base, "finetuning_s0", {"name": "finetune"}, 0, 0.80, 0.79)
    for lam, val in ((5.0, 0.90), (500.0, 0.85)):
        _grid_run(base, f"ewc_{lam}_s0", {"name": "ewc", "mode": "offline", "lam": lam}, 0, val, val - 0.01)
    if check_pad is not None:
        _run(root / "pmnist_5000_check" / "ewc_500.0_s0", 0.93 + check_pad / 100, check_pad)


def _write(tmp_path, runs):
    out = tmp_path / "docs" / "baselines.md"
    out.parent.mkdir(exist_ok=True)
    checks = out.with_name("baselines_pmnist_checks.md")
    checks.write_text("the committed comparisons\n")
    args = SimpleNamespace(split_steps=2000, pmnist_steps=500, seeds=[0], tune_seeds=[0], pmnist_test=2000,
                           benchmarks=["pmnist"], standardised_runs=None, padded_runs=None, check_steps=5000,
                           check=[])
    script().write_doc(args, runs, out)
    return out.read_text(), checks.read_text()


def test_the_comparisons_page_is_written_whole_or_left_as_it_is(tmp_path, capsys):
    """baselines.md carries the tables; the permuted-MNIST comparisons go to a page of their own, rewritten only
    when every section's runs are there (from some of them it would lose the others' results)."""
    runs = tmp_path / "runs"
    _pmnist_runs(runs, check_pad=0)
    page, checks = _write(tmp_path, runs)
    assert "### Permuted MNIST (10 tasks), Domain-IL" in page and "learner.lam=5.0" in page
    assert "(checks)" not in page and "standardised against unit" not in page  # not on the main page
    assert checks == "the committed comparisons\n"
    said = capsys.readouterr().out
    assert "baselines_pmnist_checks.md not rewritten" in said and "--pixels standardised" in said
    assert "--pad 2" in said and "--variant NAME" in said and "5,000 iterations" not in said  # the missing ones

    (runs / "standardised").mkdir()  # an empty folder is no section's runs
    _pmnist_runs(runs / "padded", check_pad=2)
    _, checks = _write(tmp_path, runs)
    assert checks == "the committed comparisons\n"
    said = capsys.readouterr().out
    assert "--pixels standardised" in said and "--variant NAME" in said and "--pad 2 --runs" not in said

    _pmnist_runs(runs / "standardised")
    _run(runs / "variants" / "authors_fisher" / "pmnist_5000_check" / "ewc_500.0_s0", 0.94, 2)
    _, checks = _write(tmp_path, runs)
    assert checks == "the committed comparisons\n"  # one variant of three: the others' rows would be lost
    said = capsys.readouterr().out
    assert "--variant NAME" in said and "--pixels standardised" not in said
    assert said.rstrip().endswith("`): none yet for authors_online_ewc, gamma_0.9")
    _run(runs / "padded" / "pmnist_5000_check" / "online_ewc_1000.0_s0", 0.95, 2)
    for variant in ("gamma_0.9", "authors_online_ewc"):
        _run(runs / "variants" / variant / "pmnist_5000_check" / "online_ewc_1000.0_s0", 0.94, 2)
    _, checks = _write(tmp_path, runs)
    for title in ("at the protocol's 5,000 iterations (checks)", "standardised against unit pixels",
                  "28×28 against the authors' 32×32 inputs", "EWC with the authors' remaining choices"):
        assert f"### Permuted MNIST: {title}" in checks or f"### Permuted MNIST {title}" in checks, title
    assert "docs/results/baselines.md" in checks.split("###")[0]  # the head points back to the tables
    # the checks' command names the points the page shows, though this call (--doc-only: check=[]) ran none
    assert "--check-steps 5000 --check-seeds 0 --check EWC=500.0`" in checks
    assert "| EWC | 500.0 | 0 | 93.0 (last task 95.0) | 0 | 95.0 (last task 95.0) |" in checks  # 28×28 | 32×32


def test_class_il_runs_train_over_the_classes_met_and_the_other_scenarios_do_not(tmp_path):
    """The authors' Class-IL loss covers the digits met so far: every Class-IL job of the reproduction carries
    stream.active_classes=seen (and resolves to it), the other scenarios' jobs leave the default."""
    from cltrain.config import load_config
    from cltrain.resolve import check_config

    s = script()
    args = SimpleNamespace(seeds=[0, 1], tune_seeds=[0], pmnist_test=None, pixels=None, pad=None)
    for scenario in s.SPLIT_SCENARIOS:
        jobs = s.first_round(args, tmp_path, ("split_mnist", scenario, 2000))
        assert len(jobs) == sum(len(p) if len(p) > 1 else 2 for p in s.BENCHMARKS["split_mnist"].methods.values())
        for bench, scen, steps, overrides, seed, run_dir, extra in jobs:
            keys = [f"stream.scenario={scen}", f"seed={seed}", *extra, *overrides]
            cfg = load_config("baselines/split_mnist", keys)
            check_config(cfg)  # the combination is valid: Class-IL on a task-aware stream
            assert cfg.stream.active_classes == ("seen" if scenario == "class_incremental" else "all"), (scen, keys)
    pmnist = s.first_round(args, tmp_path, ("pmnist", "domain_incremental", 5000))
    assert all(not any("active_classes" in k for k in job[-1]) for job in pmnist)
