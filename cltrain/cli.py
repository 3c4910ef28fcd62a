"""`cltrain` command line (DESIGN.md, "Contract").

    cltrain fit EXPERIMENT [key=value ...]     run an experiment (a name under experiments/ or a YAML path)
    cltrain list                               experiments, streams, learners, plugins, schedules, models
    cltrain report RUN_DIR... [--out PREFIX]   mean ± sd over seeds of finished runs

Exit codes: 0 done; 2 bad usage or config (one line naming the bad key or value and what is valid);
1 a run that failed (everything finished before the failure stays in the run folder).
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
import typing
import warnings
from pathlib import Path
from typing import Sequence

from cltrain.errors import CltrainError, ConfigError


def _quiet_lightning() -> None:
    # Every per-phase Trainer would otherwise print its hardware summary and tips again.
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
                 "lightning_fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=".*srun. command is available on your system.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")
    warnings.filterwarnings("ignore", message=".*configure_optimizers. returned .None.*")  # TAME's own optimizers


def cmd_fit(args: argparse.Namespace) -> int:
    from cltrain.config import load_config
    from cltrain.resolve import check_config

    cfg = load_config(args.experiment, args.overrides)
    check_config(cfg)  # every component rule, on their source: bad input is answered before the heavy imports
    _quiet_lightning()
    from lightning_fabric.utilities.exceptions import MisconfigurationException  # pytorch_lightning's too

    from cltrain.experiment import run_experiment  # torch, Lightning, every component: seconds

    try:
        run_experiment(cfg)
    except MisconfigurationException as exc:  # settings the up-front checks did not foresee
        raise ConfigError(f"Lightning refused the trainer settings: {str(exc).splitlines()[0]} "
                          f"(trainer.* keys; valid values in README, 'Keys')") from None
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cltrain.catalog import known_names
    from cltrain.config import experiments_dirs

    experiments = sorted({str(p.relative_to(d))[:-5] for d in experiments_dirs() if d.is_dir()
                          for p in d.rglob("*.yaml")})
    print(f"experiments: {', '.join(experiments)}")
    for title, registry in [("streams", "STREAMS"), ("learners", "LEARNERS"), ("plugins", "PLUGINS"),
                            ("schedules", "SCHEDULES"), ("models", "MODELS"), ("merging methods", "MERGERS"),
                            ("merge sources (cltrain merge source=)", "SOURCES")]:
        print(f"{title}: {', '.join(known_names(registry))}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, like every other refusal (exit 2), with where to read the usage instead of it."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cltrain", description="Continual multi-task training on Lightning.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="run an experiment")
    fit.add_argument("experiment", help="a name under experiments/ without .yaml (e.g. bench/pmnist_naive) or a path")
    fit.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. stream.n_tasks=5 seed=1")
    fit.set_defaults(func=cmd_fit)
    lister = sub.add_parser("list", help="list experiments and registered components")
    lister.set_defaults(func=cmd_list)
    from cltrain.commands import COMMANDS  # report, sweep, ...: one module each

    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after options (`cltrain sweep EXP --launcher slurm seed=0,1`).
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except CltrainError as exc:
        print(f"cltrain: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cltrain: interrupted; finished phases are kept in the run folder", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.command == "fit" or not _on_given_path(exc, args):
            return _failed(args.command)
        # report, keep, merge, ...: a path given to them that cannot be read or written (a file where a folder
        # should be, a folder that does not exist) is bad usage, said in one line
        print(f"cltrain: error: cannot use {exc.filename}: {exc.strerror}; give a path to a folder that exists "
              "(or can be made) and a file that can be written", file=sys.stderr)
        return 2
    except Exception:
        return _failed(args.command)


def _on_given_path(exc: OSError, args: argparse.Namespace) -> bool:
    """Whether the failing path is one the command line gave (or lies under one): bad usage. Any other (a file
    missing from a run folder, a cache) is a failure of the command, shown with its traceback."""
    if exc.filename is None:
        return False
    given = [v for value in vars(args).values() for v in (value if isinstance(value, list) else [value])
             if isinstance(v, str) and v]
    paths = [Path(v.split("=", 1)[1] if "=" in v else v).absolute() for v in given]
    failing = Path(str(exc.filename)).absolute()
    # under a given path, a file named from it (report --out T writes T.md), or a folder on the way to it
    return any(str(failing).startswith(str(p)) or p.is_relative_to(failing) for p in paths)


def _failed(command: str) -> int:
    """An unexpected failure: the cause, and what is kept (a run keeps its finished phases)."""
    traceback.print_exc()
    kept = "finished phases are kept in the run folder" if command == "fit" else "nothing it read was changed"
    print(f"cltrain: error: `cltrain {command}` failed (traceback above); {kept}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
