"""scripts/baselines_protocol.py: the protocol runs' overrides, and a page that says what is still missing
(hand-written run folders; the real runs take 20-40 minutes each)."""
import json

import yaml

from conftest import load_script


def script():
    return load_script("baselines_protocol")


def _run(base, name, learner, seed, val, acc=0.9, stalled=False):
    """A finished run folder as cltrain writes it (the keys the page and cltrain.selection read)."""
    run = base / name
    run.mkdir(parents=True)
    cfg = {"name": "baselines/pmnist", "seed": seed, "learner": learner,
           "stream": {"pad": 2, "val_fraction": 0.1}, "trainer": {"steps_per_task": 5000}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    after = [[0.1, 0.1], [0.1, 0.1]] if stalled else [[0.9, 0.1], [0.8, 0.9]]
    (run / "metrics.json").write_text(json.dumps({
        "acc": acc, "val_acc": val, "acc_matrix": [[0.9, 0.1], [0.8, 0.95]], "val_acc_matrix": after,
        "val_acc_init": [0.1, 0.1], "wall_time_s": 1500.0}))


def test_protocol_runs_are_32x32_at_5000_iterations_on_every_test_image(tmp_path):
    s = script()
    jobs = s.rb.first_round(s.settings([0, 1, 2], [0]), tmp_path, (s.BENCH, s.SCENARIO, s.STEPS))
    assert {job[2] for job in jobs} == {5000}
    assert all(job[6] == ("stream.pad=2",) for job in jobs)  # no test subset, the experiment's pixels
    plain = [job for job in jobs if job[5].name.startswith(("finetuning", "joint", "experience"))]
    assert len(plain) == 9 and len(jobs) == 9 + 12  # plain methods on 3 seeds; 3 grids of 4 points on seed 0
    assert jobs[-9:] == plain  # grids first: the picks wait for them, the plain runs need not


def test_page_of_a_partial_reproduction_says_what_is_missing(tmp_path):
    s = script()
    runs = tmp_path / "protocol32"
    base = s.rb.folder(runs, s.BENCH, s.SCENARIO, s.STEPS)
    opts = s.settings([0, 1, 2], [0])
    assert "No run has finished yet." in s.page(opts, runs)
    _run(base, "finetuning_s0", {"name": "finetune"}, 0, 0.75, acc=0.74)
    _run(base, "ewc_0.05_s0", {"name": "ewc", "mode": "offline", "lam": 0.05}, 0, 0.80)
    _run(base, "ewc_5.0_s0", {"name": "ewc", "mode": "offline", "lam": 5.0}, 0, 0.93, acc=0.92)
    _run(base, "ewc_500.0_s0", {"name": "ewc", "mode": "offline", "lam": 500.0}, 0, 0.97, stalled=True)
    text = s.page(opts, runs)
    assert "**Finished: 4 of 27 runs.**" in text  # 9 plain + 12 grid + 3 picks x 2 more seeds
    assert "Still to run: 8 runs of the plain methods, 9 grid points on the tune seeds, 6 runs of the picks" in text
    assert "EWC 3 of 4 grid points" in text and "online EWC 0 of 4" in text and "SI 0 of 4" in text
    ewc = next(line for line in text.splitlines() if line.startswith("| EWC (grid so far: 3 of 4 points) |"))
    assert "| **92.0** | 1 |" in ewc and "learner.lam=5.0" in ewc  # the stalled point is not picked
    assert "| -2.3 |" in ewc  # one seed: no spread, so no `*` beside the gap
    assert "(stopped learning)" in ewc
    assert next(line for line in text.splitlines() if line.startswith("| fine-tuning |")).startswith(
        "| fine-tuning | **74.0** | 1 |")
    assert "![" not in text  # no figure asked for

    figure = tmp_path / "grids.png"
    assert s.grids_figure(opts, runs, figure) and figure.read_bytes()[:4] == b"\x89PNG"
    assert "![The grids: validation ACC of each grid point" in s.page(opts, runs, figure.name)


def test_grids_figure_names_each_method_marks_an_open_grid_and_draws_the_paper(tmp_path, monkeypatch):
    s = script()
    runs = tmp_path / "protocol32"
    base = s.rb.folder(runs, s.BENCH, s.SCENARIO, s.STEPS)
    opts = s.settings([0, 1, 2], [0])
    assert not s.grids_figure(opts, runs, tmp_path / "none.png")  # nothing run yet: no figure
    for lam, val in (("0.05", 0.80), ("5.0", 0.93)):
        _run(base, f"ewc_{lam}_s0", {"name": "ewc", "mode": "offline", "lam": float(lam)}, 0, val)
    drawn = {}
    monkeypatch.setattr("cltrain.plots.selection_png", lambda curves, path, reference, label: drawn.update(
        curves=curves, reference=reference))
    for c, val in (("0.05", 0.85), ("5.0", 0.95)):
        _run(base, f"si_{c}_s0", {"name": "si", "c": float(c)}, 0, val)
    assert s.grids_figure(opts, runs, tmp_path / "grids.png")
    curve, si = drawn["curves"]  # in the table's order
    assert curve.method == "EWC (grid so far: 2 of 4 points)" and curve.labels == ["0.05", "5.0"]
    assert si.method == "SI (grid so far: 2 of 4 points)"
    paper = s.rb.PAPER[(s.BENCH, s.SCENARIO)]
    assert drawn["reference"] == {curve.method: paper["EWC"], si.method: paper["SI"]}


def test_count_follows_the_plan_not_the_folders(tmp_path):
    """Runs outside the plan (another seed, a point that was not picked) do not count; with two tune seeds a
    grid point counts per tune seed, and a finished grid's pick is looked for on the remaining seed."""
    s = script()
    runs = tmp_path / "protocol32"
    base = s.rb.folder(runs, s.BENCH, s.SCENARIO, s.STEPS)
    _run(base, "finetuning_s0", {"name": "finetune"}, 0, 0.75)
    _run(base, "ewc_5.0_s3", {"name": "ewc", "mode": "offline", "lam": 5.0}, 3, 0.93)  # seed 3: not asked for
    for seed in (0, 1):
        for lam, val in (("0.05", 0.80), ("5.0", 0.93), ("500.0", 0.90), ("50000.0", 0.50)):
            _run(base, f"ewc_{lam}_s{seed}", {"name": "ewc", "mode": "offline", "lam": float(lam)}, seed, val)
    _run(base, "ewc_500.0_s2", {"name": "ewc", "mode": "offline", "lam": 500.0}, 2, 0.90)  # not the pick
    done, total, left, _ = s.missing(runs, s.settings([0, 1, 2], [0, 1]))
    assert (done, total) == (9, 9 + 24 + 3)  # plain on 3 seeds; 3 grids x 4 points x 2 tune seeds; picks x seed 2
    assert left == ["8 runs of the plain methods", "16 grid points on the tune seeds",
                    "3 runs of the picks on the other seeds"]
    _run(base, "ewc_5.0_s2", {"name": "ewc", "mode": "offline", "lam": 5.0}, 2, 0.93)  # the pick, on seed 2
    assert s.missing(runs, s.settings([0, 1, 2], [0, 1]))[0] == 10


def test_one_run_left_is_said_in_the_singular(tmp_path):
    s = script()
    runs = tmp_path / "protocol32"
    base = s.rb.folder(runs, s.BENCH, s.SCENARIO, s.STEPS)
    for name, learner in (("finetuning", {"name": "finetune"}), ("joint", {"name": "joint"})):
        _run(base, f"{name}_s0", learner, 0, 0.75)
    left = s.missing(runs, s.settings([0], [0]))[2]
    assert left[0] == "1 run of the plain methods" and left[1] == "12 grid points on the tune seeds"


def test_hand_written_notes_are_appended_to_the_page(tmp_path):
    s = script()
    runs = tmp_path / "protocol32"
    base = s.rb.folder(runs, s.BENCH, s.SCENARIO, s.STEPS)
    _run(base, "finetuning_s0", {"name": "finetune"}, 0, 0.75, acc=0.74)
    opts, out = s.settings([0, 1, 2], [0]), tmp_path / "page.md"
    assert "## Why" not in s.page(opts, runs, out=out)  # no notes file: nothing appended
    (tmp_path / "page_notes.md").write_text("## Why the means differ\n\nmeasured cause\n")
    text = s.page(opts, runs, out=out)
    assert text.index("| fine-tuning |") < text.index("## Why the means differ") and text.endswith("measured cause\n")


def test_variants_run_each_finished_pick_and_the_page_pairs_them_by_seed(tmp_path):
    """--variants: the pick of a finished grid with the authors' choices on every seed; the section pairs each
    variant run with the table's run of the same seed."""
    s = script()
    runs = tmp_path / "protocol32"
    base = s.rb.folder(runs, s.BENCH, s.SCENARIO, s.STEPS)
    opts = s.settings([0, 1, 2], [0])
    ewc = {"name": "ewc", "mode": "offline"}
    for lam, val in (("0.05", 0.80), ("5.0", 0.90), ("500.0", 0.95), ("50000.0", 0.85)):
        _run(base, f"ewc_{lam}_s0", {**ewc, "lam": float(lam)}, 0, val, acc=0.95)
    jobs = s.variant_jobs(opts, runs, ["authors_fisher", "gamma_0.9"])
    # EWC's grid is done (online EWC's is not, and gamma_0.9 is online EWC's only): its pick on the 3 seeds
    assert [job[5].relative_to(runs).as_posix() for job in jobs] == [
        f"variants/authors_fisher/pmnist_5000/domain_incremental/ewc_500.0_s{seed}" for seed in (0, 1, 2)]
    assert all(job[3][-1] == "learner.lam=500.0" and job[6] == ("stream.pad=2", *s.rb.AUTHORS_FISHER) for job in jobs)

    assert "authors' remaining choices" not in s.page(opts, runs)  # no variant run yet: no section
    _run(jobs[0][5].parent, jobs[0][5].name, {**ewc, "lam": 500.0}, 0, 0.94, acc=0.942)
    _run(jobs[1][5].parent, jobs[1][5].name, {**ewc, "lam": 500.0}, 1, 0.94, acc=0.93)  # no table run of seed 1
    row = next(line for line in s.page(opts, runs).splitlines() if line.startswith("| EWC | 500.0 |"))
    assert "the authors' Fisher" in row and "| 0 |" in row and "| -0.8 [-0.8, -0.8] |" in row
