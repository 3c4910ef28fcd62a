"""`cltrain merge RUN_DIR [method=NAME] [lam=X] [merge.<option>=V ...] [out=DIR]`: merge a finished run's experts.

The run must come from the `merge` learner with an offline method (it keeps every task vector in
checkpoints/last.pt, with the base weights). The task vectors are merged with `method` (default: the run's
own), scaled by `lam` (default: the best of `lam_grid` on `val_per_task` training samples per task, the
same seeded samples the learner used: never test data), and the merged model is scored on every task's test
set beside each expert on its own task. Writes OUT/model.pt (the merged state dict) and OUT/merge.json
(OUT defaults to RUN_DIR/merged/<method>).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cltrain.config import bounded, component_config, count, merge_checked, parse_overrides, text
from cltrain.errors import ConfigError


@dataclass
class MergeRunConfig:
    method: Optional[str] = text(None)  # a registered merging method; None: the run's learner.method
    lam: Optional[float] = bounded(None, 0, 10, low_open=True)  # None: the best of lam_grid on validation samples
    lam_grid: list[float] = bounded([0.25, 0.5, 0.75, 1.0, 1.5], 0, 10, low_open=True)
    val_per_task: int = count(500, high=100_000)
    merge: dict[str, Any] = field(default_factory=dict)  # the method's options, e.g. merge.density=0.2
    out: Optional[str] = text(None)  # default RUN_DIR/merged/<method>


def check_request(run_dir: Path, overrides: list[str]) -> tuple[MergeRunConfig, Any]:
    """The typed request and the method's own config, refused with one line before torch is imported."""
    from omegaconf import OmegaConf

    from cltrain.catalog import lookup

    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"{run_dir} is not a run folder with a checkpoint (config.yaml, checkpoints/last.pt); "
                          f"valid: the run_dir of a finished `cltrain fit` with learner.name=merge")
    req: MergeRunConfig = OmegaConf.to_object(merge_checked(MergeRunConfig, parse_overrides(overrides)))
    from cltrain.config import check_fields

    check_fields(req, "")
    run_learner = OmegaConf.load(run_dir / "config.yaml").get("learner", {})
    if run_learner.get("name") != "merge":
        raise ConfigError(f"{run_dir} was run with learner.name={run_learner.get('name')!r}; valid: a run of "
                          f"learner.name=merge (it keeps the task vectors)")
    if req.method is None:
        req.method = str(run_learner.get("method"))
    merger = lookup("MERGERS", req.method)
    if merger.learns_scale and req.lam is not None:
        raise ConfigError(f"bad value {req.lam!r} for 'lam'; valid: null (method={req.method!r} learns its own "
                          f"coefficients)")
    schema = merger.Config
    if req.lam is not None and req.lam_grid != MergeRunConfig().lam_grid:
        raise ConfigError(f"bad value {req.lam_grid!r} for 'lam_grid'; valid: its default unless lam=null")
    return req, component_config(dict(req.merge), schema, "merge")


def cmd_merge(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    req, options = check_request(run_dir, args.overrides)
    from cltrain.merging.offline import merge_run  # torch and the streams: seconds

    result = merge_run(run_dir, req, options)
    print(f"[cltrain] merged {len(result['tasks'])} experts with {req.method} (lam {result['lam']}): "
          f"mean acc {result['acc']:.4f}, normalised by the experts {result['normalised_acc']:.4f} -> "
          f"{result['out']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("merge", help="merge a finished merge-learner run's task vectors into one model")
    parser.add_argument("run_dir", help="the run folder of a `cltrain fit` with learner.name=merge")
    parser.add_argument("overrides", nargs="*", help="method=ties lam=0.5 merge.density=0.2 out=DIR ...")
    parser.set_defaults(func=cmd_merge)
