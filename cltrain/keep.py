"""`cltrain keep SRC... --to DEST`: copy the records of finished runs, so results outlive the machine that made them.

A run folder's records are its top-level text files (RECORDS: config.yaml, metrics.json, metrics.csv and what a
method adds, e.g. schedule_counts.csv): what `cltrain report`, `--select val` and the results pages read. They
are a few KB a run, where its checkpoints are MBs, so a reproduction that spans machines or sessions commits
them (e.g. under docs/results/runs/) and any later machine rewrites its pages from them, or copies them back
into its runs folder (`cltrain keep docs/results/runs/X --to runs/X`) so the reproduction reuses them instead of
running them again. Each run keeps its path relative to the SRC it was found under (a run given itself: its
name); checkpoints, logs and plots stay behind. With `--logs` its Lightning CSV log (logs/*/metrics.csv, the
training curves logged every few steps, tens of KB) goes too, for pages that read training-time figures (the TAME
page). A run kept before with other records is a conflict: nothing is copied and the command names it.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
from pathlib import Path

from cltrain.errors import ConfigError

RECORDS = (".json", ".yaml", ".csv")  # a run folder's top-level files of these kinds
LOGS = "logs/*/metrics.csv"  # Lightning's CSV log of the training-time figures (cltrain.loggers)


def records(run: Path, logs: bool = False) -> list[Path]:
    top = [p for p in run.iterdir() if p.is_file() and p.suffix in RECORDS]
    return sorted(top + (list(run.glob(LOGS)) if logs else []))


def plan(sources: list[Path], dest: Path, logs: bool = False) -> list[tuple[Path, Path, Path]]:
    """(record, its copy, the run's kept folder) for every record not kept yet; ConfigError, before anything is
    copied, for a source that is not a folder, a destination inside a source (or the other way round), and records
    kept before that differ from the run's."""
    from cltrain.report import find_runs, read_record

    for src in sources:
        if not src.is_dir():
            raise ConfigError(f"keep: {src} is not a folder; give folders of finished runs (holding metrics.json)")
        if dest.resolve().is_relative_to(src.resolve()) or src.resolve().is_relative_to(dest.resolve()):
            raise ConfigError(f"keep: --to {dest} and {src} contain one another; give a destination outside the "
                              "runs (e.g. docs/results/runs/NAME)")
    copies, conflicts, found = [], [], {}
    for src in (s.absolute() for s in sources):  # "." keeps its folder's name, as the folder given by name would
        base = src.parent if (src / "metrics.json").exists() else src  # a run given itself keeps its own name
        for run in find_runs([src]):
            read_record(run / "metrics.json")  # a record cut short is refused, not kept
            place = dest / run.relative_to(base)
            if found.setdefault(place, run) != run:
                raise ConfigError(f"keep: {found[place]} and {run} would both be kept as {place}; keep them in two "
                                  "commands with different --to")
            for record in records(run, logs):
                copy = place / record.relative_to(run)
                if not copy.exists():
                    copies.append((record, copy, place))
                elif not filecmp.cmp(record, copy, shallow=False):
                    conflicts.append(str(copy))
    if conflicts:
        raise ConfigError(f"keep: {len(conflicts)} records under {dest} differ from the runs' being kept (e.g. "
                          f"{conflicts[0]}): a different run of the same name is there; move one of them away, or "
                          "keep to another --to")
    return copies


def keep(sources: list[Path], dest: Path, logs: bool = False) -> int:
    """Copy the records (with `logs`, the CSV logs too) not kept yet (after `plan`'s checks); the number of runs
    that gained some."""
    copies = plan(sources, dest, logs)
    for record, copy, _ in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all: another process keeping or bringing back the same runs never reads half a file
        part = copy.with_name(f".{copy.name}.{os.getpid()}.part")
        shutil.copy2(record, part)
        os.replace(part, copy)
    return len({place for _, _, place in copies})


def keep_beside(run: Path, runs: Path, kept: Path, logs: bool = False) -> None:
    """A reproduction's finished run (under `runs`) kept at the same place under `kept`, as soon as it finishes:
    a session that ends before anyone runs `cltrain keep` still leaves it in the working tree."""
    try:
        keep([run], kept / run.parent.relative_to(runs), logs)
    except OSError as exc:  # the folder became unwritable mid-reproduction: say so in one line, runs stay
        raise ConfigError(f"keep: cannot keep {run} under {kept}: {exc.strerror} ({exc.filename})") from None


def bring_back(kept: Path, runs: Path) -> int:
    """Kept runs (with any logs kept) copied back into a reproduction's runs folder, which then reuses them; 0 when
    none are kept."""
    return keep([kept], runs, logs=True) if any(kept.rglob("metrics.json")) else 0


def from_option(parser: argparse.ArgumentParser, option: str | None, runs: Path) -> Path | None:
    """A script's --keep DIR: None when not given, else DIR, whose kept runs are first brought back into `runs`
    (a conflict is the script's usage error: exit 2, nothing copied)."""
    if not option:
        return None
    kept = Path(option).resolve()
    if kept.name != runs.name:  # comparison runs (--runs .../padded) kept with the page's folder would mix in
        parser.error(f"--keep {option}: give a folder named like the runs folder {runs.name!r} (each runs folder has "
                     f"its own kept folder, e.g. docs/results/runs/.../{runs.name})")
    if kept.exists() and not kept.is_dir():
        parser.error(f"--keep {option}: a file; give a folder (made when missing)")
    try:  # said now, not after the first long run has finished
        kept.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--keep {option}: cannot make it ({exc.strerror}); give a folder you can write")
    if not os.access(kept, os.W_OK):
        parser.error(f"--keep {option}: not writable; give a folder you can write")
    try:
        back = bring_back(kept, runs)
    except ConfigError as exc:
        parser.error(f"--keep {option}: {exc}")
    if back:
        print(f"{back} runs kept under {kept} brought back into {runs}", flush=True)
    return kept


def refuse_partial_page(parser: argparse.ArgumentParser, missing: list, total: int, runs: Path, page,
                        keeps: bool = True) -> None:
    """A page script's usage error (exit 2, the page left as it is) while any of the `total` runs the page shows is
    `missing`: rewritten from fewer (on a new machine: none) it would lose measured numbers. `keeps`: the script
    has --keep, so bringing kept runs back is the way named."""
    if not missing:
        return
    how = (f"bring kept runs back with --keep docs/results/runs/{runs.name} (docs/results/runs/README.md), or run "
           "them" if keeps else "run them (without --report-only)")
    parser.error(f"{len(missing)} of the page's {total} runs are not finished under {runs} (e.g. {missing[0]}), so "
                 f"{page} is left as it is; {how}")


def add_option(parser: argparse.ArgumentParser, example: str) -> None:
    """A reproduction script's --keep DIR (bring_back at its start, keep_beside after each run)."""
    parser.add_argument("--keep", metavar="DIR", help=f"keep each finished run's records (config, metrics) under DIR "
                        f"as it finishes, e.g. {example} (committed); runs kept there before are first copied back "
                        "into the runs folder and reused (cltrain keep)")


def cmd_keep(args: argparse.Namespace) -> int:
    dest = Path(args.to)
    runs = keep([Path(s) for s in args.runs], dest, args.logs)
    print(f"kept the records of {runs} run{'s' * (runs != 1)} under {dest}" if runs
          else f"nothing new to keep under {dest}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keep", help="copy the records of finished runs (config, metrics; no checkpoints) to "
                            "another folder, e.g. one that is committed")
    parser.add_argument("runs", nargs="+", help="run folders, or folders containing run folders")
    parser.add_argument("--to", required=True, help="where the records go; each run keeps its path relative to "
                        "the folder it was found under")
    parser.add_argument("--logs", action="store_true", help="also each run's Lightning CSV log (logs/*/metrics.csv: "
                        "the training-time figures), for pages that read them")
    parser.set_defaults(func=cmd_keep)
