"""Figures for the run folder: the accuracy matrix as a heatmap, and per-task retention curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; runs on headless cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402


def _margins(fig, left: float = 0.75, bottom: float = 0.55, top: float = 0.35, right: float = 0.15) -> None:
    """Fixed margins in inches (room for the tick labels, axis labels and title at these font sizes): what
    tight_layout would find, without the extra draw it makes to measure the text (about half of a plot's time)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)


def acc_matrix_png(R: np.ndarray, path: Path, title: str = "") -> None:
    phases, tasks = R.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * tasks, 1.0 + 0.5 * phases))
    image = ax.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
    if phases * tasks <= 400:  # numbers stay readable up to 20x20
        for i in range(phases):
            for j in range(tasks):
                ax.text(j, i, f"{100 * R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if R[i, j] < 0.6 else "black")
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after phase")
    ax.set_xticks(range(tasks))
    ax.set_yticks(range(phases))
    ax.set_title(title or "test accuracy (%)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    _margins(fig, right=0.45)  # the colorbar's tick labels
    fig.savefig(path, dpi=110)
    plt.close(fig)


def retention_png(R: np.ndarray, path: Path, order: Sequence[int] | None = None, title: str = "") -> None:
    order = list(range(R.shape[1])) if order is None else list(order)
    fig, ax = plt.subplots(figsize=(7, 4))
    phases = np.arange(R.shape[0])
    for j in range(R.shape[1]):
        start = order.index(j)
        ax.plot(phases[start:], R[start:, j], marker="o", markersize=3, label=f"task {j}")
    seen = [R[i, sorted(set(order[: i + 1]))].mean() for i in phases]
    ax.plot(phases, seen, color="black", linewidth=2.5, label="mean over seen")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("after phase")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "retention of each task")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    ax.grid(alpha=0.3)
    _margins(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _CountFormatter(LogFormatter):
    """Log-axis labels as 20k or 1M: LogFormatter picks which ticks get a label, the text needs no mathtext."""

    def __call__(self, value: float, pos=None) -> str:
        if not super().__call__(value, pos):
            return ""
        for size, unit in ((1e6, "M"), (1e3, "k")):
            if value >= size:
                return f"{value / size:g}{unit}"
        return f"{value:g}"


def schedule_png(counts: np.ndarray, path: Path) -> None:
    """Samples of each task per phase (log scale): the environment the learner trained in."""
    fig, ax = plt.subplots(figsize=(7, 4))
    phases = np.arange(counts.shape[0])
    for j in range(counts.shape[1]):
        seen = counts[:, j] > 0
        if seen.any():
            ax.plot(phases[seen], counts[seen, j], marker="o", markersize=3, label=f"task {j}")
    ax.set_yscale("log")
    # plain labels ("10k"): the default 10^4 labels go through mathtext, whose parser costs ~0.5 s to build
    ax.yaxis.set_major_formatter(_CountFormatter())
    ax.yaxis.set_minor_formatter(_CountFormatter(labelOnlyBase=False))  # labels minor ticks on a short axis
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # phases are whole numbers
    ax.set_xlabel("phase")
    ax.set_ylabel("training samples")
    ax.set_title("samples of each task per phase")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    _margins(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def facilitation_png(iters: Sequence[int | None], acc: Sequence[float], cfg, path: str) -> None:
    """Iterations to criterion and early accuracy against the index of the new task."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    xs = np.arange(len(iters))
    reached = [(x, i) for x, i in zip(xs, iters) if i is not None]
    if reached:
        left.plot(*zip(*reached), marker="o")
    missed = [x for x, i in zip(xs, iters) if i is None]
    if missed:
        left.scatter(missed, [0] * len(missed), marker="x", color="red", label="never reached")
        left.legend(fontsize=7)
    left.set_xlabel("task index")
    left.set_ylabel(f"iterations to {100 * cfg.criterion:.0f}% train acc")
    left.grid(alpha=0.3)
    right.plot(xs, acc, marker="o", color="tab:green")
    right.set_xlabel("task index")
    right.set_ylabel(f"train acc after {cfg.fixed_iters} iterations")
    right.set_ylim(0, 1.02)
    right.grid(alpha=0.3)
    fig.suptitle("forward facilitation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
