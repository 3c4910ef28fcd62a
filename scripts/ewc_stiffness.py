"""lr · λ · ΣF_max after each task of an EWC run, from its last checkpoint (docs/results/baselines.md, "Why EWC
went to chance with SGD"): SGD with heavy-ball momentum β is stable on the penalty only while this is < 2(1 + β).

    .venv/bin/python scripts/ewc_stiffness.py RUN_DIR --lr 0.02 --lam 10
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def stiffness(run_dir: Path, lr: float, lam: float) -> list[tuple[float, str]]:
    """Per finished task: (lr·λ·max over weights of the running Fisher sum, the tensor holding that max)."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    fishers = next(v["fishers"] for k, v in walk(state) if k.endswith("_extra_state") and "fishers" in v)
    total: dict[str, torch.Tensor] = {}
    out = []
    for fisher in fishers:
        total = {k: total.get(k, 0) + f for k, f in fisher.items()}
        name, top = max(((k, float(t.max())) for k, t in total.items()), key=lambda kv: kv[1])
        out.append((lr * lam * top, name))
    return out


def products(run_dir: Path, lr: float, lam: float) -> list[float]:
    """lr·λ·ΣF_max after each task, from the run's `fisher_peaks` record (metrics.json), so a run kept without
    its checkpoint (docs/results/runs/) still gives it; from the checkpoint for runs made before the record."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("fisher_peaks") is not None:
        # a diverged run's Fisher is NaN, which metrics.json holds as null
        return [float("nan") if peak is None else lr * lam * peak for peak in metrics["fisher_peaks"]]
    if (run_dir / "checkpoints" / "last.pt").exists():
        return [v for v, _ in stiffness(run_dir, lr, lam)]
    return []


def walk(node, prefix=""):
    """(key, value) of every mapping entry in a nested checkpoint."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{prefix}{k}", v
            yield from walk(v, f"{prefix}{k}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--lam", type=float, required=True)
    args = parser.parse_args()
    rows = stiffness(args.run_dir, args.lr, args.lam)
    print(", ".join(f"{v:.2f}" for v, _ in rows), f"(max in {rows[-1][1]})" if rows else "")


if __name__ == "__main__":
    main()
