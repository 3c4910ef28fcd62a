"""Where a `cltrain fit` spends its host time, and (on CUDA) every call that makes the host wait for the GPU.

    CLTRAIN_DATA=<data root> python scripts/profile_fit.py [--device cpu|cuda] [--hidden 32] [--tasks 3]
                                                           [--top 40] [--syncs] [key=value ...]

Runs `cltrain fit bench/pmnist_naive` (or --experiment) in this process, progress bar and wandb off, and prints:

- the training steps it took and the fit's wall time;
- with --syncs (CUDA only), instead of the profile, torch's sync debug mode on: each call site (the innermost
  cltrain / Lightning / torch frames) that made a synchronising CUDA call (a read-back such as `.item()`,
  `.tolist()`, a blocking copy), how often, and how often per training step. A per-step sync stalls the host
  until the GPU has drained its queue, so the host cannot queue the next step while the GPU runs this one: a
  GPU-only cost that a CPU profile cannot show;
- otherwise cProfile's top functions by own time and by cumulative time.

Nothing is compared or asserted: this is a diagnostic, read beside scripts/bench_pmnist.py's ratios.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Frames worth naming in a sync site: the code that asked for the value, not warnings' or this script's own.
PACKAGES = {"cltrain", "pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities", "torchmetrics",
            "torch"}


def fit_args(args: argparse.Namespace, run_dir: str) -> list[str]:
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    return ["fit", args.experiment, f"stream.n_tasks={args.tasks}", "seed=0", f"run_dir={run_dir}",
            f"model.hidden=[{','.join(map(str, args.hidden))}]", "trainer.progress_bar=false",
            "logger.wandb.mode=disabled", f"trainer.accelerator={accelerator}", *args.overrides]


def package_of(filename: str) -> str:
    """The top-level package a frame's file belongs to: the folder after the last `site-packages` (a virtual
    environment's own path may contain 'torch' or 'cltrain'), else 'cltrain' for the checkout's own files."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        after = len(parts) - parts[::-1].index("site-packages")
        return parts[after] if after < len(parts) else ""
    return "cltrain" if "cltrain" in parts[:-1] else ""


def site(stack: list[traceback.FrameSummary], depth: int = 3) -> str:
    """The innermost `depth` frames from the packages that matter, innermost last."""
    kept = [f for f in stack if package_of(f.filename) in PACKAGES]
    short = [f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}" for f in kept[-depth:]]
    return " <- ".join(reversed(short)) or "(outside the named packages)"


class SyncCounter:
    """Counts torch's 'called a synchronizing CUDA operation' warnings by call site; other warnings pass through
    to the handler that was in place, and the warning filters are restored afterwards."""

    def __init__(self):
        self.sites: Counter[str] = Counter()
        self._filters = warnings.catch_warnings()
        self._previous = None

    def __enter__(self):
        import torch

        self._filters.__enter__()  # restores the filters and showwarning on exit
        self._previous = warnings.showwarning
        # Every occurrence, not once per location; other warnings keep their filters.
        warnings.filterwarnings("always", message=".*synchroniz")
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            self.sites[site(traceback.extract_stack()[:-1])] += 1
        else:
            self._previous(message, category, filename, lineno, file, line)

    def __exit__(self, *exc):
        import torch

        torch.cuda.set_sync_debug_mode(0)
        self._filters.__exit__(*exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--experiment", default="bench/pmnist_naive")
    parser.add_argument("--hidden", type=int, nargs="+", default=[32])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--syncs", action="store_true", help="count synchronising CUDA calls instead of profiling")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import cltrain.experiment  # noqa: F401  (imports outside the measured fit, as bench_pmnist.py does)
    from cltrain.cli import main as cli

    if args.syncs and args.device != "cuda":
        parser.error("--syncs counts synchronising CUDA calls: it needs --device cuda")
    run_dir = Path(tempfile.mkdtemp(prefix="profile_fit_")) / "run"
    watcher = SyncCounter() if args.syncs else cProfile.Profile()  # both context managers: on around the fit only
    start = time.perf_counter()
    with watcher:
        rc = cli(fit_args(args, str(run_dir)))
    seconds = time.perf_counter() - start
    if rc != 0:
        print(f"profile_fit: cltrain fit failed (exit {rc})", file=sys.stderr)
        return rc
    steps = json.loads((run_dir / "metrics.json").read_text())["steps"]
    print(f"fit: {seconds:.2f} s, {steps} training steps, {args.tasks} tasks, hidden {args.hidden}, {args.device}"
          + ("" if args.syncs else " (under cProfile)"))
    if args.syncs:
        total = sum(watcher.sites.values())
        print(f"\nsynchronising CUDA calls: {total} ({total / max(steps, 1):.2f} per training step)")
        for where, count in watcher.sites.most_common(30):
            print(f"  {count:7d}  ({count / max(steps, 1):5.2f}/step)  {where}")
    else:
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(watcher, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
            print(f"\n---- cProfile by {key} ----\n" + out.getvalue().split("\n", 6)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
