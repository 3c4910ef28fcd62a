"""Permuted MNIST on van de Ven & Tolias's full protocol, tuned on validation data; writes
docs/results/baselines_protocol.md (measured numbers only).

docs/results/baselines.md tunes permuted MNIST at 500 iterations per task on 28x28 inputs (CPU scale) and runs
the protocol's length only as checks at the authors' settings. This page is the protocol itself: 5,000
iterations per task, MNIST padded to 32x32 and permuted over all 1,024 positions, every test image, with each
regularised method's strength picked on validation data from the same grids (scripts/reproduce_baselines.py's
BENCHMARKS["pmnist"]) and the same two rounds: plain methods on every seed and every grid point on the tune
seeds, then each pick on the other seeds. A run took 35-45 minutes here (two side by side), so a reproduction
spans sessions: finished runs are reused, and the page says what is still missing.

    CLTRAIN_DATA=../shared/data python scripts/baselines_protocol.py --jobs 2
        [--runs runs/baselines/protocol32] [--seeds 0 1 2] [--tune-seeds 0] [--doc-only]
        [--keep docs/results/runs/baselines/protocol32] [--variants authors_fisher gamma_0.9 authors_online_ewc]

--variants also runs each pick with the authors' remaining choices (their Fisher, online EWC's gamma 0.9) on every
seed, so the page measures on its own protocol what they change (a section after the table).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_baselines as rb  # noqa: E402  (the grids, the rounds and the table are that script's)

REPO = Path(__file__).resolve().parents[1]
BENCH, SCENARIO, STEPS, PAD = "pmnist", "domain_incremental", 5000, 2
KEPT = "docs/results/runs/baselines/protocol32"  # where --keep puts this page's runs (docs/results/runs/README.md)


def settings(seeds: list[int], tune_seeds: list[int]) -> SimpleNamespace:
    """The reproduce_baselines options that make its rounds run this protocol: 32x32, every test image."""
    return SimpleNamespace(seeds=seeds, tune_seeds=tune_seeds, pmnist_test=None, pixels=None, pad=PAD,
                           pmnist_steps=STEPS)


def missing(runs: Path, args) -> tuple[int, int, list[str], dict[str, str]]:
    """(planned runs finished, planned runs, what is still to run, the grids not finished, both in words).
    Planned: plain methods on every seed, every grid point on the tune seeds, each method's pick on the other
    seeds (which point that is shows once its grid is done). Run folders outside the plan (other seeds, an
    earlier pick) are not counted."""
    base = rb.folder(runs, BENCH, SCENARIO, STEPS)
    finished = lambda method, point, seed: (base / rb.point_name(method, point, seed) / "metrics.json").exists()
    others = [s for s in args.seeds if s not in args.tune_seeds]
    counts = {"runs of the plain methods": [0, 0], "grid points on the tune seeds": [0, 0],
              "runs of the picks on the other seeds": [0, 0]}  # what -> [finished, planned]
    open_grids = {}  # method -> "k of n", its grid on the tune seeds so far

    def count(what: str, method: str, point: list[str] | None, seeds: list[int]) -> None:
        counts[what][0] += sum(finished(method, point, s) for s in seeds) if point is not None else 0
        counts[what][1] += len(seeds)

    for method, points in rb.BENCHMARKS[BENCH].methods.items():
        if len(points) == 1:
            count("runs of the plain methods", method, points[0], args.seeds)
            continue
        for point in points:
            count("grid points on the tune seeds", method, point, args.tune_seeds)
        points_done = sum(all(finished(method, p, s) for s in args.tune_seeds) for p in points)
        if points_done < len(points):
            open_grids[method] = f"{points_done} of {len(points)}"
        pick = rb.picked(runs, BENCH, SCENARIO, STEPS, method, args.tune_seeds) if points_done == len(points) else None
        count("runs of the picks on the other seeds", method, pick, others)
    done, total = (sum(c[k] for c in counts.values()) for k in (0, 1))
    singular = lambda what: what.replace("runs ", "run ", 1).replace("points ", "point ", 1)  # noqa: E731
    left = [f"{planned - n} {what if planned - n > 1 else singular(what)}" for what, (n, planned) in counts.items()
            if n < planned]
    return done, total, left, open_grids


def variant_jobs(args, runs: Path, names: list[str]) -> list[tuple]:
    """--variants: each tuned method's pick with a variant's keys (reproduce_baselines.VARIANTS: the authors'
    Fisher, online EWC's gamma 0.9, both) on every seed, under <runs>/variants/NAME/; none for a method whose
    grid is not finished (its pick is not known yet)."""
    picks = finished_picks(runs, args)
    jobs = []
    for name in names:
        variant, base = rb.VARIANTS[name], rb.folder(runs / "variants" / name, BENCH, SCENARIO, STEPS)
        for method in (m for m in variant.methods if m in picks):
            jobs += [(BENCH, SCENARIO, STEPS, picks[method], seed, base / rb.point_name(method, picks[method], seed),
                      (*rb.extra(args, BENCH, SCENARIO), *variant.overrides)) for seed in args.seeds]
    return jobs


def finished_picks(runs: Path, args) -> dict[str, list[str]]:
    """method -> its pick's overrides, for the tuned methods whose grid has finished on the tune seeds."""
    if not rb.folder(runs, BENCH, SCENARIO, STEPS).is_dir():
        return {}
    open_grids = missing(runs, args)[3]
    return {method: rb.picked(runs, BENCH, SCENARIO, STEPS, method, args.tune_seeds)
            for method, points in rb.BENCHMARKS[BENCH].methods.items() if len(points) > 1 and method not in open_grids}


def variants_section(args, runs: Path) -> str:
    """The picks with each variant beside the same picks as the table ran them, on the seeds both have."""
    paper, rows = rb.PAPER[(BENCH, SCENARIO)], []
    base = rb.folder(runs, BENCH, SCENARIO, STEPS)
    picks = finished_picks(runs, args)  # once: it reads every run of the grids
    acc = lambda path: json.loads(path.read_text())["acc"] * 100  # noqa: E731
    for name, variant in rb.VARIANTS.items():
        for method, overrides in picks.items():
            if method not in variant.methods:
                continue
            theirs = rb.seed_runs(rb.folder(runs / "variants" / name, BENCH, SCENARIO, STEPS), method, overrides)
            pairs = [(base / p.parent.name / "metrics.json", p) for p in theirs
                     if (base / p.parent.name / "metrics.json").exists()]
            if not pairs:
                continue
            shift = [acc(b) - acc(a) for a, b in pairs]
            setting = " ".join(o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] in rb.TUNED)
            rows.append(f"| {method} | {setting} | {variant.what}: {' '.join(f'`{o}`' for o in variant.overrides)} "
                        f"| {', '.join(p.parent.name.rsplit('_s', 1)[1] for _, p in pairs)} | "
                        f"{rb.check_cell([a for a, _ in pairs])} | {rb.check_cell([b for _, b in pairs])} | "
                        f"{sum(shift) / len(shift):+.1f} [{min(shift):+.1f}, {max(shift):+.1f}] | "
                        f"{rb.paper_gap([b for _, b in pairs], paper.get(method))} | "
                        f"{rb.paper_cell(paper.get(method))} |")
    if not rows:
        return ""
    return ("\n## The picks with the authors' remaining choices\n\n"
            "Each pick run again on the same seeds with one of the authors' choices that the table does not make "
            "(`--variants NAME ...`, runs under `" + str(rb.shown(runs)) + "/variants/NAME/`): their Fisher, the "
            "log-likelihood of the model's own arg-max prediction over every training image (cltrain's default: "
            "the true label, 500 images), and online EWC's γ = 0.9 (`param_values.py`; the table: γ = 1). Test ACC "
            "% after the last task (the just-trained last task in brackets); *shift*: the variant minus the pick, "
            "mean [min, max] of the per-seed differences; *− paper* as in the table.\n\n"
            "| method | setting | variant | seeds | pick | variant | shift | variant − paper | paper (± sd) |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def grids_figure(args, runs: Path, path: Path) -> bool:
    """The grids as a figure (reproduce_baselines.grid_figure), unfinished ones titled so."""
    open_grids = missing(runs, args)[3] if rb.folder(runs, BENCH, SCENARIO, STEPS).is_dir() else {}
    return rb.grid_figure(runs, (BENCH, SCENARIO, STEPS), args.tune_seeds, path, open_grids)


def page(args, runs: Path, figure: str | None = None, out: Path | None = None) -> str:
    """The page from the finished runs; written to `out`, it ends with the hand-written notes beside it
    (<out>_notes.md, e.g. why a mean differs from the paper's) when they exist."""
    base = rb.folder(runs, BENCH, SCENARIO, STEPS)
    done, total, left, open_grids = missing(runs, args) if base.is_dir() else (0, 0, [], {})
    head = HEAD.format(seeds=" ".join(map(str, args.seeds)), tune=" ".join(map(str, args.tune_seeds)),
                       runs=rb.shown(runs))
    if done == 0:
        return head + "\nNo run has finished yet.\n"
    rows, differ = rb.table(runs, BENCH, SCENARIO, STEPS, args.tune_seeds)
    rows = [mark_open_grid(row, open_grids) for row in rows]
    grids = ", ".join(f"{method} {so_far} grid points" for method, so_far in open_grids.items())
    status = (f"**Finished: {done} of {total} runs.** "
              + (f"Still to run: {', '.join(left)}. " if left else "")
              + (f"Grids not finished on the tune seeds ({grids}): their rows (marked) show the best of the "
                 "points run so far, which may change. " if open_grids else ""))
    differ_line = ("Differs from the paper by more than both spreads (`*`): " + ", ".join(differ) + "."
                   if differ else "No mean differs from the paper's by more than both spreads.")
    shown = (f"\n\n{rb.figure_link(figure, 'The grids')}\n\nThe grids (written beside this page by the same "
             f"command). {rb.GRID_FIGURE_NOTE}" if figure else "")
    return (head + f"\n{status.strip()}\n\n" + rb.HEADER + "\n".join(rows) + shown
            + f"\n\n{rb.divergence_line(base)} {rb.wall_line(base)}\n\n{differ_line}\n"
            + variants_section(args, runs) + (rb.notes_beside(out) if out is not None else ""))


def mark_open_grid(row: str, open_grids: dict[str, str]) -> str:
    """A table row of a method whose grid is not finished names that in its method cell, so the row is not read
    as a pick: "| online EWC (grid so far: 1 of 4 points) | ..."."""
    for method, so_far in open_grids.items():
        if row.startswith(f"| {method} |"):
            return f"| {method} (grid so far: {so_far} points) |" + row[len(f"| {method} |"):]
    return row


HEAD = """# Permuted MNIST on the full protocol (van de Ven & Tolias), tuned on validation data

Regenerate: `CLTRAIN_DATA=<data> python scripts/baselines_protocol.py --jobs 2 --seeds {seeds} --tune-seeds {tune}`
(runs under `{runs}/`; finished runs are reused; `--keep docs/results/runs/baselines/protocol32` also reuses the
runs kept there and keeps new ones: docs/results/runs/README.md; `--doc-only` rewrites this page from them). Every
number in the *ours* columns is measured by that command.

**Protocol** (experiments/baselines/pmnist.yaml with `stream.pad=2`): 10 tasks, the first the identity; MNIST
padded to 32×32 and permuted over all 1,024 positions, pixels in [0, 1]; MLP 1024-1000-1000 with one 10-way
head, no task id (domain-incremental); Adam lr 1e-4, batch 128, 5,000 iterations per task; tested on all 10,000
test images of every task. The paper column and the `*` rule are those of docs/results/baselines.md (its
Table 4 of the authors' ICLR 2019 submission, ± SEM over 20 seeds; `*`: our mean differs from the paper's by
more than our sd and the paper's sd).

**Where this departs from the paper** (as on docs/results/baselines.md): 10 % of each task's training images
are held out for validation; λ and c are picked on validation ACC of the tune seeds ({tune}) over the grids of
scripts/reproduce_baselines.py (EWC λ 0.05–5e4, online EWC λ 0.1–1e5, SI c 0.05–5e4, two decades apart, around
the authors' 500, 1000 and 5); a point that stopped learning is never picked; EWC's Fisher takes the true label
on 500 samples per task (the authors: the predicted label on every sample), online EWC keeps γ = 1 (the
authors: 0.9); seeds {seeds}, mean ± sd; every seed keeps the identity first task. Experience replay is
cltrain's reservoir of 2,000 samples (no such row in the paper).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/baselines/protocol32")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0], help="seeds the grids run on")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--doc-only", action="store_true", help="only rewrite the page from finished runs")
    parser.add_argument("--variants", nargs="+", default=[], choices=list(rb.VARIANTS), metavar="NAME",
                        help="also run each finished pick with the authors' choices on every seed: "
                             f"{', '.join(rb.VARIANTS)} (the page adds a section)")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "baselines_protocol.md"))
    rb.add_keep(parser, KEPT)
    args = parser.parse_args()
    rb.check_page_path(parser, args.out)
    if not set(args.tune_seeds) <= set(args.seeds):
        parser.error(f"--tune-seeds {args.tune_seeds} must be among --seeds {args.seeds}")
    runs = Path(args.runs).resolve()
    if runs == (REPO / "runs" / "baselines").resolve():
        parser.error("--runs: give a folder of its own (e.g. runs/baselines/protocol32), not the 500-iteration "
                     "tables' runs/baselines")
    opts, target = settings(args.seeds, args.tune_seeds), (BENCH, SCENARIO, STEPS)
    kept = rb.kept_runs(parser, args, runs)
    if not args.doc_only:
        rb.run_all(rb.first_round(opts, runs, target), args.jobs, kept)
        rb.run_all(rb.second_round(opts, runs, target), args.jobs, kept)
        rb.run_all(variant_jobs(opts, runs, args.variants), args.jobs, kept)
    rb.refuse_empty_page(parser, [rb.folder(runs, BENCH, SCENARIO, STEPS)], KEPT)
    out = Path(args.out)
    figure = out.with_name(out.stem + "_grids.png")
    drawn = grids_figure(opts, runs, figure)
    out.write_text(page(opts, runs, figure.name if drawn else None, out))
    print(f"wrote {out}" + (f" and {figure}" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
