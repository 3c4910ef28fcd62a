"""Continual-learning metrics from the accuracy matrix (DESIGN.md, "Metrics").

R[i][j]: accuracy on task j after phase i; b[j]: accuracy of the untrained model. When a task recurs, the
formulas use the phase in which it was *first* trained (with the default order that phase is j itself).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _first_phase(order: Optional[Sequence[int]], n_tasks: int) -> np.ndarray:
    order = list(range(n_tasks)) if order is None else list(order)
    return np.array([order.index(j) for j in range(n_tasks)])


def average_accuracy(R: np.ndarray) -> float:
    return float(np.mean(R[-1]))


def backward_transfer(R: np.ndarray, order: Optional[Sequence[int]] = None) -> float:
    first = _first_phase(order, R.shape[1])
    last = R.shape[0] - 1
    js = [j for j in range(R.shape[1]) if first[j] < last]
    return float(np.mean([R[last, j] - R[first[j], j] for j in js])) if js else 0.0


def forward_transfer(R: np.ndarray, b: np.ndarray, order: Optional[Sequence[int]] = None) -> float:
    first = _first_phase(order, R.shape[1])
    js = [j for j in range(R.shape[1]) if first[j] > 0]
    return float(np.mean([R[first[j] - 1, j] - b[j] for j in js])) if js else 0.0


def forgetting(R: np.ndarray, order: Optional[Sequence[int]] = None) -> float:
    first = _first_phase(order, R.shape[1])
    last = R.shape[0] - 1
    js = [j for j in range(R.shape[1]) if first[j] < last]
    if not js:
        return 0.0
    return float(np.mean([R[first[j]:last, j].max() - R[last, j] for j in js]))


def seen_average(R: np.ndarray, order: Optional[Sequence[int]] = None) -> list[float]:
    """Mean accuracy over the tasks met so far, after each phase (the usual learning curve)."""
    order = list(range(R.shape[1])) if order is None else list(order)
    return [float(np.mean(R[i, sorted(set(order[: i + 1]))])) for i in range(R.shape[0])]


def summary(R: np.ndarray, b: Optional[np.ndarray], order: Optional[Sequence[int]] = None
            ) -> dict[str, Optional[float]]:
    """ACC, BWT, FWT and forgetting; FWT is None without the untrained network's scores b."""
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R, order),
        "fwt": None if b is None else forward_transfer(R, b, order),
        "forgetting": forgetting(R, order),
    }
