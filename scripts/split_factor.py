"""Split MNIST at the baselines page's validation picks, with one stream key changed against the page's value.

    CLTRAIN_DATA=../shared/data python scripts/split_factor.py FACTOR [--seeds 1 2 3] [--scenarios task_incremental
        domain_incremental class_incremental] [--jobs 2] [--runs runs/baselines/factors] [--doc-only]
        [--keep docs/results/runs/baselines/factors]

FACTOR is one of FACTORS: `class_order` (the digits paired in label order, or dealt to the tasks by the seed as van
de Ven & Tolias's code does on every seed but its first), `pixels` (inputs standardised, cltrain's default, or in
[0, 1] as the authors feed them) or `active_classes` (Class-IL only: the training loss over every class from the
start, cltrain's default, or over the classes met so far, as the authors train). The comparisons stand where
docs/results/baselines.md's split-MNIST tables stood when they were made: label order, standardised inputs
(REFERENCE_KEYS; the tables have fed [0, 1] since). Each method runs at those tables' pick ("picked by val") on the
same seeds both ways, the same protocol otherwise (experiments/baselines/split_mnist.yaml, one `cltrain fit`
subprocess a run through reproduce_baselines.py's `fit`, finished runs reused), and writes the factor's page: test
ACC mean ± sd per side, the per-seed shift, the paper's figure, from every finished pair under --runs (so runs made
by several commands, e.g. more seeds for some scenarios, land on one page, which names those commands). The
reference side (the page's values) is one set of runs for every factor: `<runs>/<scenario>/reference/`; the changed
side `<runs>/<scenario>/<key>-<value>/`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce_baselines import (BENCHMARKS, PAPER, REPO, SHORT, TUNED, add_keep, check_page_path,  # noqa: E402
                                 kept_runs, notes_beside, paper_cell, paper_gap, point_name, refuse_empty_page,
                                 run_all, shown)

# The validation picks of docs/results/baselines.md's split-MNIST tables (`cltrain report --select val` over
# seed 0's grid, label order, standardised pixels), per scenario: (method, value of its tuned key); a plain
# method has no value.
PICKS = {
    "task_incremental": (("fine-tuning", None), ("EWC", "1e9"), ("online EWC", "1e12"), ("SI", "0.5")),
    "domain_incremental": (("fine-tuning", None), ("EWC", "1e7"), ("online EWC", "1e8"), ("SI", "5000.0")),
    "class_incremental": (("fine-tuning", None), ("EWC", "1e9"), ("online EWC", "1e4"), ("SI", "50.0")),
}
STEPS = 2000  # the protocol's iterations per task, as the page's split-MNIST tables
REFERENCE = "reference"  # the folder of the runs with the page's values (every factor's reference side)
KEPT = "docs/results/runs/baselines/factors"  # where --keep puts these pages' runs (docs/results/runs/README.md)
# The page's values the picks were made with, which experiments/baselines/split_mnist.yaml no longer has: its
# split-MNIST tables fed standardised inputs then and [0, 1] since (the authors' scale). Both sides keep them,
# but for the factor's own key, so the comparisons stay those their pages report.
REFERENCE_KEYS = ("stream.pixels=standardised",)


@dataclass(frozen=True)
class Factor:
    """One stream key compared at the picks: the page's value (the key's default) against `value`."""

    key: str  # stream.<key>
    value: str  # what the changed side runs
    labels: tuple[str, str]  # column names: the page's value, the changed one
    page: str  # docs/results/<page>.md; <page>_notes.md (hand-written) is appended when it exists
    title: str
    about: str  # what docs/results/baselines.md's runs do against what the authors do
    same: str  # what stays the same between a seed's two runs (the page says it beside the override)
    details: Callable[[list[int]], str] = lambda seeds: ""  # more about the changed side, per seed
    # methods with no setting to pick, run on this factor's page too (at their one grid point) because a gap of
    # theirs on docs/results/baselines.md is read against this factor
    plain: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = tuple(PICKS)  # where the key applies (the config refuses it elsewhere)

    @property
    def override(self) -> str:
        return f"stream.{self.key}={self.value}"

    @property
    def folder(self) -> str:
        return f"{self.key}-{self.value}"


def pairs_of(seed: int) -> str:
    """The digit pairs a shuffled run of this seed trains on (the stream's own draw)."""
    from cltrain.config import load_config
    from cltrain.streams.split import class_groups, class_order

    cfg = load_config(BENCHMARKS["split_mnist"].experiment, [f"seed={seed}", "stream.class_order=shuffled"])
    groups = class_groups(10, cfg.stream.n_tasks, class_order(cfg, 10))
    return " ".join("{" + ",".join(map(str, g)) + "}" for g in groups)


def shuffled_pairs(seeds: list[int]) -> str:
    return ("The pairs of each seed with `stream.class_order=shuffled`: "
            + "; ".join(f"seed {s}: {pairs_of(s)}" for s in seeds) + ".\n")


FACTORS = {
    "class_order": Factor(
        key="class_order", value="shuffled", labels=("label order", "shuffled pairs"), page="baselines_class_order",
        title="Split MNIST: digits paired in label order or by the seed",
        about="docs/results/baselines.md's split-MNIST tables paired the digits in label order on every seed ({0,1}, "
              "{2,3}, …, `stream.class_order=natural`) and standardised the inputs when they were picked; both sides "
              "here keep standardised inputs. Van de Ven & Tolias's code pairs them so on its first seed "
              "only and deals the digits to the tasks in a random order on the others, so the paper's 20-seed means "
              "average over pairings.",
        same="pairs drawn from the seed by a generator of their own: the initial weights and every other draw come "
             "from the same seeds either way",
        details=shuffled_pairs,
        # joint's Task- and Domain-IL means on docs/results/baselines.md sit above the paper's by more than its
        # tiny spreads, with every seed in label order; the paper's seeds average over pairings
        plain=("joint",)),
    "pixels": Factor(
        key="pixels", value="unit", labels=("standardised", "unit pixels"), page="baselines_pixels",
        title="Split MNIST: standardised inputs or pixels in [0, 1]",
        about="docs/results/baselines.md's split-MNIST tables fed standardised inputs ((x/255 − 0.1307) / 0.3081, "
              "cltrain's default, `stream.pixels=standardised`) when they were picked; van de Ven & Tolias's code "
              "feeds the pixels in [0, 1] (`ToTensor`, no normalisation), as that page's tables do since. With [0, 1] "
              "a blank pixel is 0, so its first-layer weights get no gradient, no Fisher and no SI importance on a task; "
              "standardised, it is −0.42 and they get all three.",
        same="the same initial weights, batches and every other draw"),
    "active_classes": Factor(
        key="active_classes", value="seen", labels=("every class", "classes met"), page="baselines_active_classes",
        title="Split MNIST, Class-IL: the loss over every class or over the classes met so far",
        about="docs/results/baselines.md's Class-IL runs train one 10-way head with the loss's softmax over all ten "
              "classes from the first task on (`stream.active_classes=all`, cltrain's default), so the digits of "
              "tasks not met yet are pushed down from the start. Van de Ven & Tolias's code trains Class-IL over the "
              "classes of the tasks met so far (its \"active classes\"; its EWC Fisher too), and tests over all "
              "ten, as both sides here do. Both sides feed standardised inputs, as the other factor pages.",
        same="the same initial weights, batches and every other draw",
        # joint's Class-IL mean on docs/results/baselines.md sits below the paper's by more than both spreads
        plain=("joint",), scenarios=("class_incremental",)),
}


def methods(factor: Factor, scenario: str) -> tuple[tuple[str, str | None], ...]:
    """(method, value) pairs a scenario runs for this factor: the validation picks, then its plain methods."""
    return PICKS[scenario] + tuple((method, None) for method in factor.plain)


def grid_point(method: str, value: str | None) -> list[str]:
    """The overrides of a method's grid point in reproduce_baselines.py (so run names match the page's)."""
    for overrides in BENCHMARKS["split_mnist"].methods[method]:
        tuned = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] in TUNED]
        if (tuned[0] if tuned else None) == value:
            return overrides
    raise ValueError(f"{method}={value} is not a grid point of reproduce_baselines.py's split-MNIST grids")


def sides(factor: Factor) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(folder, extra overrides) of the two sides: the page's values, then the changed key."""
    base = tuple(o for o in REFERENCE_KEYS if o.split("=", 1)[0] != f"stream.{factor.key}")
    return (REFERENCE, REFERENCE_KEYS), (factor.folder, (*base, factor.override))


def run_dir(runs: Path, scenario: str, side: str, method: str, value: str | None, seed: int) -> Path:
    return runs / scenario / side / point_name(method, grid_point(method, value), seed)


def jobs(factor: Factor, args, runs: Path) -> list[tuple]:
    """Seed by seed, so a stopped comparison leaves whole pairs."""
    return [("split_mnist", scenario, STEPS, grid_point(method, value), seed,
             run_dir(runs, scenario, side, method, value, seed), extra)
            for seed in args.seeds for scenario in args.scenarios if scenario in factor.scenarios
            for method, value in methods(factor, scenario) for side, extra in sides(factor)]


def accs(paths: list[Path]) -> list[float]:
    return [json.loads(p.read_text())["acc"] * 100 for p in paths]


def row(factor: Factor, runs: Path, scenario: str, method: str, value: str | None, seeds: list[int]) -> str | None:
    """A method's table row over the seeds whose two runs have both finished; None when no seed has."""
    from cltrain.report import mean_sd

    paths = [[run_dir(runs, scenario, side, method, value, s) / "metrics.json" for s in seeds]
             for side, _ in sides(factor)]
    done = [i for i, s in enumerate(seeds) if all(side[i].exists() for side in paths)]
    if not done:
        return None
    before, after = (accs([side[i] for i in done]) for side in paths)
    shift = [b - a for a, b in zip(before, after)]
    cells = [f"{m:.1f} ± {sd:.1f}" for m, sd in (mean_sd(before), mean_sd(after))]
    ref = PAPER[("split_mnist", scenario)].get(method)
    gaps = [paper_gap([side[i] for i in done], ref) for side in paths]
    per_seed = ", ".join(f"{a:.1f} → {b:.1f}" for a, b in zip(before, after))
    return (f"| {method} | {value or '—'} | {', '.join(str(seeds[i]) for i in done)} | {cells[0]} | {cells[1]} | "
            f"{sum(shift) / len(shift):+.1f} [{min(shift):+.1f}, {max(shift):+.1f}] | {per_seed} | {gaps[0]} | "
            f"{gaps[1]} | {paper_cell(ref)} |")


def finished_seeds(factor: Factor, runs: Path, scenario: str) -> list[int]:
    """Seeds with at least one finished pair (both sides of a method) in a scenario, read from the run folders."""
    seeds = set()
    for method, value in methods(factor, scenario):
        stem = point_name(method, grid_point(method, value), 0)[:-1]  # "<name>_s"
        for path in (runs / scenario / REFERENCE).glob(f"{stem}*/metrics.json"):
            seed = path.parent.name[len(stem):]
            if seed.isdigit() and (run_dir(runs, scenario, factor.folder, method, value, int(seed)) /
                                   "metrics.json").exists():
                seeds.add(int(seed))
    return sorted(seeds)


def nothing_to_pick(factor: Factor) -> str:
    if not factor.plain:
        return ""
    return f" ({' and '.join(factor.plain)}: no setting to pick; the page's one run per seed)"


def commands(name: str, seeds_of: dict[str, list[int]]) -> str:
    """The commands that make exactly these pairs: one per set of seeds, with the scenarios run on it."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for scenario, seeds in seeds_of.items():
        groups.setdefault(tuple(seeds), []).append(scenario)
    return " and ".join(f"`CLTRAIN_DATA=<data> python scripts/split_factor.py {name} --seeds "
                        f"{' '.join(map(str, seeds))} --scenarios {' '.join(scenarios)}`"
                        for seeds, scenarios in groups.items())


def write_doc(factor: Factor, name: str, runs: Path, out: Path) -> None:
    """The factor's page from every finished pair under `runs` (whatever commands made them), its notes appended."""
    seeds_of = {s: seeds for s in PICKS if (seeds := finished_seeds(factor, runs, s))}
    every = sorted({seed for seeds in seeds_of.values() for seed in seeds})
    first, second = factor.labels
    text = [f"# {factor.title}\n\n"
            f"Regenerate: {commands(name, seeds_of)} (runs under `{shown(runs)}/`; finished runs are reused, and "
            f"each command rewrites this page from every finished pair there; `--keep {KEPT}` also reuses the runs "
            f"kept there and keeps new ones: docs/results/runs/README.md). Every number here is measured by those "
            f"commands.\n\n"
            + f"{factor.about} Here each method runs at that page's validation pick{nothing_to_pick(factor)}, on seeds "
              f"{', '.join(map(str, every))} (each row's *seeds* says which), once with the page's values ({first}) "
              f"and once with `{factor.override}` ({factor.same}), {STEPS} iterations per task, everything else as "
              f"experiments/baselines/split_mnist.yaml. Test ACC % after the last task, mean ± sd over the seeds; "
              f"*shift*: {second} minus {first}, mean [min, max] of the per-seed differences; *− paper*: our mean "
              f"minus the paper's, `*` beyond both spreads (our sd, the paper's sd = SEM × √20). The settings were "
              f"picked on validation runs of seed 0 "
              f"with the page's values and not picked again for `{factor.override}`.\n"]
    details = factor.details(every)
    if details:
        text.append("\n" + details)
    for scenario, seeds in seeds_of.items():
        rows = [r for method, value in methods(factor, scenario)
                if (r := row(factor, runs, scenario, method, value, seeds))]
        text.append(f"\n## {SHORT[scenario]}\n\n| method | setting | seeds | {first} | {second} | shift | "
                    f"per seed ({first} → {second}) | {first} − paper | {second} − paper | paper (± sd) |\n"
                    f"|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    text.append(notes_beside(out))
    out.write_text("".join(text))
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("factor", choices=list(FACTORS))
    parser.add_argument("--runs", default="runs/baselines/factors")
    # what to run; the page always shows every finished pair under --runs, whichever seeds and scenarios made it
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds to run")
    parser.add_argument("--scenarios", nargs="+", default=None, choices=list(PICKS),
                        help="scenarios to run (default: every scenario the factor applies to)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--doc-only", action="store_true", help="only rewrite the page from the finished runs")
    parser.add_argument("--out", default=None, help="the page (default docs/results/<the factor's page>.md)")
    add_keep(parser, KEPT)
    args = parser.parse_args()
    check_page_path(parser, args.out)
    factor = FACTORS[args.factor]
    args.scenarios = args.scenarios or list(factor.scenarios)
    if not set(args.scenarios) <= set(factor.scenarios):
        parser.error(f"--scenarios {' '.join(args.scenarios)}: {args.factor} applies to "
                     f"{', '.join(factor.scenarios)} only")
    runs = Path(args.runs).resolve()
    kept = kept_runs(parser, args, runs)
    if not args.doc_only:
        run_all(jobs(factor, args, runs), args.jobs, kept)
    refuse_empty_page(parser, [runs / scenario / factor.folder for scenario in PICKS], KEPT)
    out = Path(args.out) if args.out else REPO / "docs" / "results" / f"{factor.page}.md"
    write_doc(factor, args.factor, runs, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
