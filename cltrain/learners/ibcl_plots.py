"""IBCL's figures for the run folder: the two-task Pareto front and the knowledge base's size per phase."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; runs on headless cluster nodes
import matplotlib.pyplot as plt  # noqa: E402


def pareto_png(front: dict[str, Any], path: Path) -> None:
    a, b = front["tasks"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for i, point in enumerate(front["points"]):
        xs, ys = zip(*point["samples"])
        ax.scatter(xs, ys, s=8, color="0.7", label="samples from the 1-α region" if i == 0 else None)
    mean = [p["mean_model"] for p in front["points"]]
    picked = [p["picked"] for p in front["points"]]
    ax.plot(*zip(*mean), marker="o", label="mean model")
    ax.plot(*zip(*picked), marker="s", linestyle="--", label="picked on validation")
    for point in front["points"]:
        ax.annotate(f"{point['w'][0]:.1f}", point["mean_model"], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"test accuracy, task {a}")
    ax.set_ylabel(f"test accuracy, task {b}")
    ax.set_title(f"zero-shot models for preferences (w, 1-w) over tasks {a}, {b}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def buffer_png(sizes: Sequence[int], path: Path, d: float) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(sizes) + 1), sizes, marker="o", label=f"d = {d:g}")
    ax.plot(range(1, len(sizes) + 1), [3 * (k + 1) for k in range(len(sizes))], linestyle=":", color="0.5",
            label="no substitution (3 per task)")
    ax.set_xlabel("tasks learned (phases)")
    ax.set_ylabel("posteriors stored")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
