"""Figures for the run folder: the accuracy matrix as a heatmap, and per-task retention curves."""
from __future__ import annotations

import textwrap
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


def selection_png(curves: Sequence, path: Path, reference: dict[str, tuple[float, float]] | None = None,
                  reference_label: str = "reference (± its spread)") -> None:
    """`cltrain report --select val --plot`: a panel per tuned method (cltrain.selection.GridCurve), see
    selection_figure."""
    fig = selection_figure(curves, reference, reference_label)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def selection_figure(curves: Sequence, reference: dict[str, tuple[float, float]] | None = None,
                     reference_label: str = "reference (± its spread)"):
    """Validation ACC of every grid point (what chose), test ACC of every point on the same seeds (dashed: shown,
    not used), the picked point ringed with its test ACC over all its seeds (mean ± sd), points that stopped
    learning crossed out, and a reference (e.g. a paper's mean ± SEM, by method name) as a grey band."""
    columns = min(3, len(curves))
    rows = -(-len(curves) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, curve in zip(axes.flat, curves):
        _grid_panel(ax, curve, (reference or {}).get(curve.method), reference_label)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    entries = {}  # one legend below the panels, every entry any panel has (crosses and bands are in some only)
    for ax in axes.flat[:len(curves)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("hyperparameters picked by validation ACC")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * (len(entries) > 3), 1, 1))
    return fig


def _grid_panel(ax, curve, reference: tuple[float, float] | None, reference_label: str) -> None:
    xs = curve.x if curve.x is not None else list(range(len(curve.labels)))
    ax.plot(xs, [100 * v for v in curve.val], marker="o", color="tab:blue", label="validation ACC (tune seeds)")
    ax.plot(xs, [100 * v for v in curve.test], marker="s", markersize=4, linestyle="--", color="tab:orange",
            alpha=0.8, label="test ACC, same seeds (not used)")
    crossed = [(x, 100 * v) for x, v, s in zip(xs, curve.val, curve.stalled) if s]
    if crossed:
        ax.scatter(*zip(*crossed), marker="x", s=80, color="red", zorder=3, label="stopped learning (never picked)")
    x_pick = xs[curve.chosen]
    ax.scatter([x_pick], [100 * curve.val[curve.chosen]], s=160, facecolors="none", edgecolors="black", zorder=3,
               label="picked")
    mean, sd = curve.chosen_test
    ax.errorbar([x_pick], [100 * mean], yerr=[100 * sd], fmt="D", color="black", capsize=4, zorder=3,
                label="picked: test ACC ± sd over its seeds")
    if reference is not None:
        ax.axhspan(reference[0] - reference[1], reference[0] + reference[1], color="grey", alpha=0.25)
        ax.axhline(reference[0], color="grey", linewidth=1, label=reference_label)
    if curve.log_x:
        ax.set_xscale("log")
    if curve.x is None:
        ax.set_xticks(xs, curve.labels, rotation=30, fontsize=7)
    ax.set_xlabel(curve.key)
    ax.set_ylabel("ACC (%)")
    seeds = f"{curve.n_chosen} seed{'s' * (curve.n_chosen > 1)}"
    ax.set_title(textwrap.fill(f"{curve.method}; pick: {seeds}", 50), fontsize=9)
    ax.grid(alpha=0.3)
