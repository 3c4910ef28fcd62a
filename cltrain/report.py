"""`cltrain report`: aggregate finished runs over seeds into one table (Markdown and CSV).

Runs are grouped by their resolved config with the seed and bookkeeping keys left out; each group is named by
the config keys whose values differ between groups, so a sweep's table labels itself. With `--select val
--tune KEYS` each method's grid point is chosen by validation ACC first (cltrain/selection.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from cltrain.errors import ConfigError

IGNORED = ("seed", "run_dir", "resume", "name", "logger.", "trainer.progress_bar", "trainer.checkpoint", "data.")
COLUMNS = {  # metrics.json key -> column title
    "acc": "ACC",
    "bwt": "BWT",
    "fwt": "FWT",
    "forgetting": "forgetting",
    "facilitation_iters_mean": "iters to criterion",
    "facilitation_acc_mean": "early train acc",
    "wall_time_s": "wall time (s)",
}


@dataclass
class Group:
    key: tuple
    label: str = ""
    runs: list[Path] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def read_record(path: Path) -> Any:
    """A run's or sweep's JSON or YAML record (metrics.json, config.yaml, sweep.json). One that no longer parses
    (cut short by a full disk, edited by hand) is a ConfigError naming it, not a parser's traceback."""
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text()
        return json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path} is not valid {kind} ({str(exc).splitlines()[0]}): a record cut short or edited "
                          "by hand; move its folder away, or make that run again") from None


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding metrics.json) at or below the given paths, sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"{path} does not exist; give run folders or folders that contain them")
        found.update(p.parent for p in ([path / "metrics.json"] if (path / "metrics.json").exists()
                                        else path.rglob("metrics.json")))
    if not found:
        raise ConfigError(f"no finished runs (metrics.json) under {', '.join(map(str, paths))}")
    return sorted(found)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(tree) if isinstance(tree, list) else tree}


def _config_key(flat: dict[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in flat.items() if not k.startswith(IGNORED)))


@lru_cache(maxsize=1)
def global_defaults() -> dict[str, Any]:
    """Every global key at its default (flattened like a run's config.yaml)."""
    from cltrain.config import ExperimentConfig  # no torch behind it

    return flatten(asdict(ExperimentConfig()))


def run_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """Every key of a run (flattened config.yaml) at its default: the global keys, and those of the run's learner
    and plugins. A key added to cltrain after a run was made is missing from its config.yaml; new keys default to
    the behaviour from before they existed, so the run had the default (read from the catalog: no torch)."""
    from cltrain import catalog
    from cltrain.errors import ConfigError

    out = dict(global_defaults())
    plugins = sorted({k.split(".")[1] for k in flat if k.startswith("plugins.") and k.count(".") >= 2})
    sections = [("learner", "LEARNERS", flat.get("learner.name", "finetune")),
                *((f"plugins.{p}", "PLUGINS", p) for p in plugins)]
    for prefix, registry, name in sections:
        try:
            config = getattr(catalog.lookup(registry, str(name)), "Config", None)
        except ConfigError:  # a component renamed or removed since the run: nothing to fill in
            continue
        if is_dataclass(config):
            out.update(flatten(asdict(config()), f"{prefix}."))
    return out


def group_runs(runs: list[Path]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    saved = [flatten(read_record(run / "config.yaml")) for run in runs]
    written = {k for flat in saved for k in flat}
    for run, flat in zip(runs, saved):
        # fill in keys added since the run was made, or a sweep extended after an upgrade would split one
        # method's grid into two groups; a method's own keys only where some run wrote them (else every label
        # would list them)
        defaults = {k: v for k, v in run_defaults(flat).items() if k in written or k in global_defaults()}
        key = _config_key({**defaults, **flat})
        group = groups.setdefault(key, Group(key))
        group.runs.append(run)
        group.metrics.append(read_record(run / "metrics.json"))
    _label(list(groups.values()))
    return list(groups.values())


def _label(groups: list[Group]) -> None:
    """Name each group by the keys that tell the groups apart (the experiment name if only one group)."""
    dicts = [dict(g.key) for g in groups]
    keys = sorted({k for d in dicts for k in d})
    varying = [k for k in keys if len({d.get(k) for d in dicts}) > 1]
    for group, d in zip(groups, dicts):
        group.label = ", ".join(f"{k}={d.get(k)}" for k in varying) or "all runs"


def mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(groups: list[Group]) -> tuple[list[str], list[list[Any]]]:
    present = [k for k in COLUMNS if any(k in m for g in groups for m in g.metrics)]
    header = ["runs", "n", *[COLUMNS[k] for k in present]]
    rows = []
    for group in groups:
        row: list[Any] = [group.label, len(group.runs)]
        for key in present:
            row.append(mean_sd([m.get(key) for m in group.metrics]))
        rows.append(row)
    return header, rows


def _fmt(cell: Any) -> str:
    if isinstance(cell, tuple):
        mean, sd = cell
        if math.isnan(mean):
            return "—"
        digits = 1 if abs(mean) >= 10 else 3
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"
    return str(cell)


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """(mean, sd) cells become two columns, `<title> mean` and `<title> sd`; other cells stay as they are."""
    out = io.StringIO()
    writer = csv.writer(out)
    paired = [any(isinstance(row[i], tuple) for row in rows) for i in range(len(header))]
    writer.writerow([name for h, two in zip(header, paired) for name in ([f"{h} mean", f"{h} sd"] if two else [h])])
    for row in rows:
        writer.writerow([v for cell in row for v in (cell if isinstance(cell, tuple) else (cell,))])
    return out.getvalue()


def report(paths: Iterable[str | Path]) -> tuple[list[str], list[list[Any]], list[Group]]:
    groups = group_runs(find_runs(paths))
    header, rows = summarise(groups)
    return header, rows, groups


def cmd_report(args: argparse.Namespace) -> int:
    curves = None
    if args.select == "val":
        header, rows, curves = _selected(args)
    elif args.tune or args.tune_seeds or args.plot:
        key, value = next((k, v) for k, v in (("--tune", args.tune), ("--tune-seeds", args.tune_seeds),
                                               ("--plot", args.plot)) if v)
        raise ConfigError(f"bad value {value!r} for '{key}'; valid: only with --select val")
    else:
        header, rows, _ = report(args.runs)
    text = markdown(header, rows)
    print(text, end="")
    if curves:
        from cltrain.plots import selection_png

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        selection_png(curves, Path(args.plot))
        print(f"wrote {args.plot}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".csv").write_text(csv_text(header, rows))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    return 0


def _selected(args: argparse.Namespace) -> tuple[list[str], list[list[Any]], list | None]:
    """--select val: the picks' table, and with --plot their grids; every argument checked before any output."""
    from cltrain.selection import grid_curves, select, selection_table

    tune = [k.strip() for k in (args.tune or "").split(",")]
    if not all(tune) or len(set(tune)) != len(tune):
        raise ConfigError(f"bad value {args.tune!r} for '--tune'; valid with --select val: the comma-separated "
                          "config keys that were searched, each once, e.g. --tune learner.lam,learner.c")
    seeds = _seeds(args.tune_seeds)
    _check_plot_path(args.plot)
    picks = select(group_runs(find_runs(args.runs)), tune, seeds)
    curves = grid_curves(picks, seeds) if args.plot else None
    if args.plot and not curves:
        raise ConfigError(f"bad value {args.plot!r} for '--plot': no method has two or more grid points to "
                          "plot; valid: runs in which a --tune key takes two or more values")
    return (*selection_table(picks, COLUMNS), curves)


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def _check_plot_path(path: str | None) -> None:
    if path is not None and Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(f"bad value {path!r} for '--plot'; valid: a file name ending in "
                          f"{', '.join(PLOT_SUFFIXES)}")


def _seeds(text: str | None) -> set[int] | None:
    if text is None:
        return None
    try:
        given = [int(v) for v in text.split(",")]  # an empty item ("0,,1") is a ValueError too
    except ValueError:
        given = []
    seeds = set(given)
    if not seeds or len(seeds) != len(given):
        raise ConfigError(f"bad value {text!r} for '--tune-seeds'; valid: comma-separated distinct integer seeds, e.g. 0 or 0,1")
    return seeds


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="aggregate finished runs over seeds (mean ± sd)")
    parser.add_argument("runs", nargs="+", help="run folders, or folders containing run folders")
    parser.add_argument("--out", help="also write OUT.md and OUT.csv")
    parser.add_argument("--select", choices=["val"], help="pick each method's hyperparameters by mean validation "
                        "ACC over seeds (runs need stream.val_fraction > 0), then report the picks' test metrics")
    parser.add_argument("--tune", help="with --select val: the comma-separated config keys searched, e.g. "
                        "learner.lam,learner.c; runs that differ only in these are one method")
    parser.add_argument("--tune-seeds", help="with --select val: compare grid points on these seeds only (e.g. 0: a "
                        "grid run on seed 0, the pick on more seeds); the table still averages every seed of the pick")
    parser.add_argument("--plot", help="with --select val: also draw each tuned method's grid (validation ACC per "
                        "point, the pick and its test ACC) to this .png, .pdf or .svg file")
    parser.set_defaults(func=cmd_report)
