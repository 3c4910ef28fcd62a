"""`cltrain merge RUN_DIR [method=NAME] [source=NAME] [lam=X] [merge.<option>=V ...] [out=DIR]`: merge a run's experts.

The task vectors come from a source (cltrain/merging/source_*.py, registry SOURCES): `merge` (a merge-learner
run of an offline method: its base and every task vector), `tame` (TAME's experts) or `phases` (any run of
trainer.keep_phase_weights=true: the network after each phase minus the network at the first phase's start, or
minus `base=PATH`). By default the source made for the run's learner, else `phases` when the run kept them.
The vectors are merged with `method` (default: a merge run's own learner.method, else task_arithmetic),
scaled by `lam` (default: the best of `lam_grid`), with `density_grid` (methods that read a density) choosing
the density too. Whatever is chosen or learned (lam, the density, AdaMerging's coefficients) uses up to
`val_per_task` rows of each task's validation split (the run's stream.val_fraction > 0; the same seeded rows
the merge learner read), never training or test data. The merged model is scored on every task's test set
beside each task's expert. Writes OUT/model.pt (the merged state dict) and OUT/merge.json (OUT defaults to
RUN_DIR/merged/<method>).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from cltrain.config import bad, bounded, check_fields, component_config, count, merge_checked, parse_overrides, text
from cltrain.errors import ConfigError


@dataclass
class MergeRunConfig:
    method: Optional[str] = text(None)  # a registered merging method; None: see the module's text
    source: Optional[str] = text(None)  # where the task vectors come from (SOURCES); None: picked from the run
    base: Optional[str] = text(None)  # source=phases: a state dict the vectors are taken from (default: phase_start)
    lam: Optional[float] = bounded(None, 0, 10, low_open=True)  # None: the best of lam_grid on validation rows
    lam_grid: list[float] = bounded([0.25, 0.5, 0.75, 1.0, 1.5], 0, 10, low_open=True)
    density_grid: Optional[list[float]] = bounded(None, 0, 1, low_open=True)  # None: merge.density as given
    val_per_task: int = count(500, high=100_000)  # validation rows per task (at most the split's)
    merge: dict[str, Any] = field(default_factory=dict)  # the method's options, e.g. merge.density=0.2
    out: Optional[str] = text(None)  # default RUN_DIR/merged/<method>


def pick_source(run_dir: Path, learner: str, asked: Optional[str]) -> str:
    """The source named, if the run can give it; else the one made for the run's learner; else one for any
    learner whose files the run holds (catalog traits: no torch import)."""
    from cltrain.catalog import entries, lookup

    def usable(entry: Any) -> bool:
        return all((run_dir / f).is_file() for f in entry.needs_files)

    if asked is not None:
        entry = lookup("SOURCES", asked)
        if entry.for_learners and learner not in entry.for_learners:
            raise bad("source", asked, f"a source for learner.name={learner!r} (source={asked!r} reads runs of "
                      f"{', '.join(entry.for_learners)})")
        if not usable(entry):
            missing = [f for f in entry.needs_files if not (run_dir / f).is_file()]
            raise bad("source", asked, f"a source whose files {run_dir} holds (it lacks {', '.join(missing)}"
                      f"{'; run with trainer.keep_phase_weights=true' if asked == 'phases' else ''})")
        return asked
    found = entries("SOURCES")
    own = [n for n, e in found.items() if learner in e.for_learners]
    if own:  # the same checks as when it is named (a killed run may lack a file it reads)
        return pick_source(run_dir, learner, own[0])
    anyone = [n for n, e in sorted(found.items()) if not e.for_learners and usable(e)]
    if anyone:
        return anyone[0]
    raise ConfigError(f"{run_dir} has nothing to merge: learner.name={learner!r} keeps no task vectors and the run "
                      f"kept no per-phase weights; valid: a run of learner.name=merge or tame, or any run with "
                      f"trainer.keep_phase_weights=true")


def check_request(run_dir: Path, overrides: list[str]) -> tuple[MergeRunConfig, Any]:
    """The typed request and the method's own config, refused with one line before torch is imported."""
    from omegaconf import OmegaConf

    from cltrain.catalog import lookup
    from cltrain.report import read_record

    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"{run_dir} is not a run folder with a checkpoint (config.yaml, checkpoints/last.pt); "
                          f"valid: the run_dir of a finished `cltrain fit`")
    req: MergeRunConfig = OmegaConf.to_object(merge_checked(MergeRunConfig, parse_overrides(overrides)))
    check_fields(req, "")
    run = OmegaConf.create(read_record(run_dir / "config.yaml"))
    learner = run.get("learner", {})
    req.source = pick_source(run_dir, str(learner.get("name")), req.source)
    if req.base is not None and not lookup("SOURCES", req.source).takes_base:
        raise bad("base", req.base, f"null: source={req.source!r} takes the run's own base")
    if req.base is not None and not Path(req.base).expanduser().is_file():
        raise bad("base", req.base, "a file holding a state dict saved with torch.save")
    if req.method is None:
        req.method = str(learner.get("method")) if req.source == "merge" else "task_arithmetic"
    merger = lookup("MERGERS", req.method)
    # validation rows are read when lam or a density is chosen on them, or coefficients are learned from them
    req.needs_val = req.lam is None or req.density_grid is not None or merger.learns_scale
    check_choices(req, merger)
    val_fraction = float(run.get("stream", {}).get("val_fraction", 0) or 0)
    if req.needs_val and val_fraction <= 0:
        raise ConfigError(f"{run_dir} was run with stream.val_fraction={val_fraction}: lam, densities and learned "
                          f"coefficients are chosen on the stream's validation split, and it has none; valid: a run "
                          f"with stream.val_fraction > 0, or a fixed lam with a method that reads no data")
    return req, component_config(dict(req.merge), merger.Config, "merge")


def check_choices(req: MergeRunConfig, merger: Any) -> None:
    """Options the request would silently ignore."""
    reads = {f.name for f in fields(merger.Config)} if merger.Config is not None else set()
    for key in ("lam_grid", "density_grid"):  # an empty grid has no point to choose
        if getattr(req, key) == []:
            raise bad(key, [], f"a non-empty list ({'null, or ' if key == 'density_grid' else ''}e.g. [0.5, 1.0])")
    if merger.learns_scale and req.lam is not None:
        raise bad("lam", req.lam, f"null (method={req.method!r} learns its own coefficients)")
    if req.lam is not None and req.lam_grid != MergeRunConfig().lam_grid:
        raise bad("lam_grid", req.lam_grid, "its default unless lam=null")
    if req.density_grid is not None and "density" not in reads:
        raise bad("density_grid", req.density_grid, f"null: method={req.method!r} reads no density")
    if req.density_grid is not None and "density" in req.merge:
        raise bad("merge.density", req.merge["density"], "unset when density_grid chooses it")
    if not req.needs_val and req.val_per_task != MergeRunConfig().val_per_task:
        raise bad("val_per_task", req.val_per_task, "its default: lam is fixed and nothing is chosen on data")


def cmd_merge(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    req, options = check_request(run_dir, args.overrides)
    from cltrain.merging.offline import merge_run  # torch and the streams: seconds

    result = merge_run(run_dir, req, options)
    norm = "undefined" if result["normalised_acc"] is None else f"{result['normalised_acc']:.4f}"
    print(f"[cltrain] merged {len(result['tasks'])} task vectors ({req.source}) with {req.method} "
          f"(lam {result['lam']}): mean acc {result['acc']:.4f}, normalised by the experts {norm} -> "
          f"{result['out']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("merge", help="merge a finished run's experts or per-phase weights into one model")
    parser.add_argument("run_dir", help="a run folder: learner.name=merge or tame, or trainer.keep_phase_weights=true")
    parser.add_argument("overrides", nargs="*", help="method=ties lam=0.5 merge.density=0.2 source=phases out=DIR ...")
    parser.set_defaults(func=cmd_merge)
