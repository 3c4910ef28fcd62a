"""`cltrain report --select val`: choose each method's hyperparameters on validation data, report test data.

A sweep's runs are grouped by config minus seed (cltrain.report.group_runs). Groups that differ only in the
tuned keys (`--tune learner.lam,learner.c`) are one method's grid; the grid point with the best mean
validation ACC over its seeds is picked, and its *test* metrics are what the table shows. The test set never
takes part in the choice.

A grid point that stopped learning is not picked: in one of its runs (any seed) some task's validation accuracy
right after its own phase is no higher than the untrained network's (`val_acc_init`). A penalty strong enough to
freeze the network can still score a high average by keeping old tasks while failing every new one; that is a
diverged baseline, not a tuned one. Only if every point stopped learning is the best of them picked (and said so).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Optional

from cltrain.errors import ConfigError
from cltrain.report import Group, _label, mean_sd, read_record

CRITERION = "val_acc"  # mean accuracy over all tasks after the last phase, on the validation splits


@dataclass
class Pick:
    """One method: the grid searched, the mean validation ACC of every point, and the point chosen."""

    method: Group  # key: the config minus seed and tuned keys; label: what tells methods apart
    grid: dict[str, list[str]] = field(default_factory=dict)  # tuned key -> the values searched
    # (grid point, mean val ACC on the tune seeds; None while select() has not checked every point ran on them)
    candidates: list[tuple[Group, Optional[float]]] = field(default_factory=list)
    stalled: set[tuple] = field(default_factory=set)  # keys of the grid points that stopped learning a task

    @property
    def chosen(self) -> Group:
        learning = [c for c in self.candidates if c[0].key not in self.stalled] or self.candidates
        # max() keeps the first of equal scores: candidates are in sorted config order, so ties break the same way
        return max(learning, key=lambda c: c[1])[0]

    def chosen_setting(self) -> str:
        key = dict(self.chosen.key)
        setting = ", ".join(f"{k}={key[k]}" for k in self.grid) or "(no tuned key)"
        return setting + (" (every point stopped learning)" if self.chosen.key in self.stalled else "")

    def grid_text(self) -> str:
        values = {k: ", ".join(sorted(v, key=_numeric_first)) for k, v in self.grid.items()}
        text = "; ".join(f"{k} ∈ {{{v}}}" for k, v in values.items()) or "—"
        stalled = [", ".join(f"{k}={dict(key)[k]}" for k in self.grid) for key in sorted(self.stalled)]
        return text + (f"; stopped learning: {'; '.join(stalled)}" if stalled else "")


def _numeric_first(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _check_tuned(groups: list[Group], tune: list[str]) -> None:
    present = {k for g in groups for k, _ in g.key}
    missing = [k for k in tune if k not in present]
    if missing:
        varying = sorted({k for g in groups for k, v in g.key if len({dict(h.key).get(k) for h in groups}) > 1})
        raise ConfigError(f"bad value {','.join(missing)!r} for '--tune': in no run's config; valid: config keys "
                          f"of these runs, e.g. those that vary: {', '.join(varying) or 'none'}")


def _val_score(group: Group, seeds: Optional[Collection[int]] = None) -> Optional[float]:
    """Mean validation ACC over the group's runs on `seeds` (all runs without it); None when none ran on them."""
    for run, metrics in zip(group.runs, group.metrics):
        if metrics.get(CRITERION) is None:
            raise ConfigError(f"run {run} has no '{CRITERION}' in metrics.json; valid for --select val: runs "
                              "made with stream.val_fraction > 0")
    scored = _on_seeds(group, seeds)
    return mean_sd([m[CRITERION] for m in scored])[0] if scored else None


def _on_seeds(group: Group, seeds: Optional[Collection[int]]) -> list[dict]:
    """The metrics of the group's runs on `seeds` (all its runs without them)."""
    return [m for run, m in zip(group.runs, group.metrics) if seeds is None or run_seed(run) in seeds]


def _scored(pick: Pick, seeds: Optional[Collection[int]]) -> list[tuple[Group, float]]:
    """The candidates with their scores. A method without a tuned key has nothing to choose, so its runs may all
    lie outside the tune seeds (its score is then over all of them); a grid needs every point run on them."""
    if not pick.grid and pick.candidates[0][1] is None:
        return [(pick.candidates[0][0], _val_score(pick.candidates[0][0]))]
    for group, score in pick.candidates:
        if score is None:
            have = sorted(run_seed(run) for run in group.runs)
            raise ConfigError(f"bad value {','.join(map(str, sorted(seeds or [])))!r} for '--tune-seeds'; "
                              f"valid: seeds every grid point was run with (runs {group.runs[0].parent} ... "
                              f"have seeds {have})")
    return pick.candidates


def _check_seeds(groups: list[Group], seeds: Optional[Collection[int]]) -> None:
    """Every tune seed is one some run has (a typo would otherwise narrow the comparison silently)."""
    have = {run_seed(run) for g in groups for run in g.runs}
    missing = sorted(set(seeds or ()) - have)
    if missing:
        raise ConfigError(f"bad value {','.join(map(str, missing))!r} for '--tune-seeds': no run has that seed; "
                          f"valid: seeds of these runs ({', '.join(map(str, sorted(have)))})")


def learns_every_task(metrics: dict) -> bool:
    """Each phase's task scores above the untrained network on validation right after that phase (True when the
    run has no validation matrices to judge by)."""
    after, before = metrics.get("val_acc_matrix"), metrics.get("val_acc_init")
    if not after or not before:
        return True
    order = metrics.get("order") or list(range(len(after)))
    return all(after[k][task] > before[task] for k, task in enumerate(order))


def run_seed(run: Path) -> int:
    return int(read_record(run / "config.yaml")["seed"])


def select(groups: list[Group], tune: list[str], seeds: Optional[Collection[int]] = None) -> list[Pick]:
    """One Pick per method: groups that agree on every key except the tuned ones share a method. With `seeds`,
    grid points are compared on those seeds' runs only (a grid run on seed 0, the pick then run on more seeds:
    every point is scored on the same seeds), and the pick's table rows still cover all its seeds."""
    _check_tuned(groups, tune)
    _check_seeds(groups, seeds)
    picks: dict[tuple, Pick] = {}
    for group in sorted(groups, key=lambda g: g.key):
        method_key = tuple((k, v) for k, v in group.key if k not in tune)
        pick = picks.setdefault(method_key, Pick(Group(method_key)))
        pick.candidates.append((group, _val_score(group, seeds)))
        # every run counts here, not only the tune seeds': a configuration that froze on any seed is not a
        # baseline to report (the pick's extra seeds can show it after it was first chosen)
        if not all(learns_every_task(m) for m in group.metrics):
            pick.stalled.add(group.key)
        for k, v in group.key:
            if k in tune and v not in pick.grid.setdefault(k, []):
                pick.grid[k].append(v)
    for pick in picks.values():
        pick.candidates = _scored(pick, seeds)
    _label([p.method for p in picks.values()])
    return list(picks.values())


def selection_table(picks: list[Pick], columns: dict[str, str]) -> tuple[list[str], list[list]]:
    """Rows: method, the picked setting, the grid searched, seeds, validation ACC, then the test metrics."""
    present = [k for k in columns if any(k in m for p in picks for m in p.chosen.metrics)]
    header = ["method", "picked (by val ACC)", "grid searched", "n", "val ACC", *[columns[k] for k in present]]
    rows = []
    for pick in picks:
        chosen = pick.chosen
        rows.append([pick.method.label, pick.chosen_setting(), pick.grid_text(), len(chosen.runs),
                     mean_sd([m[CRITERION] for m in chosen.metrics]),
                     *[mean_sd([m.get(k) for m in chosen.metrics]) for k in present]])
    return header, rows


@dataclass
class GridCurve:
    """One tuned method's grid as a figure shows it (`cltrain report --select val --plot`): each point's mean
    validation and test ACC on the tune seeds, and the pick's test ACC over all its seeds. Test ACC of the points
    not picked is shown, never used: it lets a reader see whether validation ranked the points as test would."""

    method: str
    key: str  # what the x axis varies: the tuned key(s)
    labels: list[str]  # each point's tuned value(s)
    x: Optional[list[float]]  # numeric positions when one numeric key is tuned; None: the points are categories
    val: list[float]
    test: list[float]
    stalled: list[bool]
    chosen: int  # index of the picked point
    chosen_test: tuple[float, float]  # the pick's test ACC, mean and sd over every seed it ran on
    n_chosen: int

    @property
    def log_x(self) -> bool:
        """A grid spaced in decades reads on a log axis (every value positive, spanning more than 10x)."""
        return self.x is not None and min(self.x) > 0 and max(self.x) / min(self.x) > 10


def grid_curves(picks: list[Pick], seeds: Optional[Collection[int]] = None,
                name: Optional[Callable[[Pick], str]] = None) -> list[GridCurve]:
    """A curve per method with two or more grid points, the points in increasing order of their tuned value;
    `name` titles a method's panel (default: the learner and the keys that tell the plotted methods apart)."""
    curves = []
    plotted = [pick for pick in picks if len(pick.candidates) >= 2]
    names = [name(p) for p in plotted] if name else _short_names([dict(p.method.key) for p in plotted])
    for pick, title in zip(plotted, names):
        keys = list(pick.grid)
        points = sorted(pick.candidates, key=lambda c: [_numeric_first(dict(c[0].key)[k]) for k in keys])
        labels = [", ".join(dict(group.key)[k] for k in keys) for group, _ in points]
        numeric = len(keys) == 1 and all(_numeric_first(v)[0] == 0 for v in labels)
        chosen = pick.chosen
        curves.append(GridCurve(
            method=title, key=", ".join(keys), labels=labels,
            x=[float(v) for v in labels] if numeric else None,
            val=[score for _, score in points],
            test=[mean_sd([m.get("acc") for m in _on_seeds(group, seeds)])[0] for group, _ in points],
            stalled=[group.key in pick.stalled for group, _ in points],
            chosen=[group.key for group, _ in points].index(chosen.key),
            chosen_test=mean_sd([m.get("acc") for m in chosen.metrics]), n_chosen=len(chosen.runs)))
    return curves


def _short_names(methods: list[dict[str, str]]) -> list[str]:
    """Each method named by the learner and the keys that tell the plotted methods apart (a table's labels also
    list the keys that only tell them from the untuned methods)."""
    varying = sorted({k for m in methods for k in m if len({n.get(k) for n in methods}) > 1} - {"learner.name"})
    return [", ".join([m.get("learner.name", "")] * ("learner.name" in m) + [f"{k}={m.get(k)}" for k in varying])
            or "all runs" for m in methods]

