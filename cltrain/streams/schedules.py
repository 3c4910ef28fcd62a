"""Rehearsal schedules: how many samples of every task each phase trains on (DESIGN.md: the stream *schedule*).

A schedule only produces a count matrix C[phase, task]; the samples themselves are picked by
`phase_indices`: nested runs take a prefix of one fixed permutation per task (so phase k's rehearsal set
is a subset of phase k-1's whenever the count falls), independent runs take a fresh permutation per phase.
Schedules know nothing of learners, so any method can be trained in any environment.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cltrain.config import RehearsalConfig
from cltrain.registry import Registry
from cltrain.streams.base import Stream
from cltrain.seeding import generator


def ages(order: list[int], n_tasks: int) -> np.ndarray:
    """A[k, j] = phases since task j was last the new task (0 for the new task), -1 if not met yet."""
    out = np.full((len(order), n_tasks), -1, dtype=np.int64)
    last = np.full(n_tasks, -1, dtype=np.int64)
    for k, task in enumerate(order):
        last[task] = k
        out[k] = np.where(last >= 0, k - last, -1)
    return out


class Schedule:
    """Base: the new task at full size; `rehearse` fills in the old tasks (none here)."""

    def __init__(self, cfg: RehearsalConfig):
        self.cfg = cfg

    def counts(self, order: list[int], sizes: list[int]) -> np.ndarray:
        age = ages(order, len(sizes))
        n = np.asarray(sizes, dtype=np.int64)[None, :].repeat(len(order), 0)
        old = age > 0
        counts = np.where(age == 0, n, 0)
        counts[old] = self.rehearse(age, n, old)
        return counts

    def rehearse(self, age: np.ndarray, n: np.ndarray, old: np.ndarray) -> np.ndarray:
        return np.zeros(int(old.sum()), dtype=np.int64)


SCHEDULES: Registry[type[Schedule]] = Registry("schedule", "stream.schedule")
SCHEDULES.register("none")(Schedule)


@SCHEDULES.register("joint")
class JointSchedule(Schedule):
    """Upper bound: every task met so far at full size in every phase."""

    def rehearse(self, age, n, old):
        return n[old]


@SCHEDULES.register("powerlaw")
class PowerLawSchedule(Schedule):
    """n(x) = round(a * x^-b) clipped to [1, N]; x = age of the task in phases.

    min_proportion: a = N, b = ln(1/p_min) / ln(T-1), so the oldest task keeps p_min*N in the last phase.
    shifted: n(x) = n0 * (1 + x/s)^-beta (n0 defaults to N).
    """

    def rehearse(self, age, n, old):
        x, size = age[old].astype(np.float64), n[old].astype(np.float64)
        if self.cfg.form == "shifted":
            n0 = size if self.cfg.n0 is None else self.cfg.n0
            raw = n0 * (1.0 + x / self.cfg.s) ** (-self.cfg.beta)
        else:
            raw = size * x ** (-self.exponent(age.shape[0]))
        return np.clip(np.round(raw), 1, size).astype(np.int64)

    def exponent(self, n_phases: int) -> float:
        if n_phases <= 2:  # with one old task in one phase there is no decay to fit: full rehearsal
            return 0.0
        return math.log(1.0 / self.cfg.p_min) / math.log(n_phases - 1)


def _exact_round(values: np.ndarray, total: int, upper: np.ndarray) -> np.ndarray:
    """Integers within [1, upper] summing to `total` exactly: floor, then hand out the rest by largest remainder."""
    base = np.clip(np.floor(values), 1, upper).astype(np.int64)
    rest = total - int(base.sum())
    order = np.argsort(-(values - np.floor(values)), kind="stable")
    step = 1 if rest > 0 else -1
    while rest != 0:
        changed = False
        for i in order:
            if rest == 0:
                break
            if 1 <= base[i] + step <= upper[i]:
                base[i] += step
                rest -= step
                changed = True
        if not changed:
            raise ValueError(f"cannot place a budget of {total} samples within the per-task limits")
    return base


class BudgetMatched(Schedule):
    """A schedule whose rehearsal budget equals the power law's (`stream.rehearsal.match`).

    stored: the total over all phases and old tasks is the power law's; how it splits over phases is the
    schedule's own, so each phase's share of new-task data differs between schedules. exposure: every phase
    rehearses exactly as many samples as the power law's phase, so with a fixed number of steps per phase every
    schedule presents the same rehearsal and new-task samples per phase; only their spread over old tasks differs.
    Exactly, not only in expectation, for one seed: the phases then have the same size, the loader's order
    depends on (seed, phase, pass) alone, and the new task's rows sit after the older tasks' in every schedule
    (with a recurring `stream.order` an old task may come after it, and the counts agree in expectation).
    """

    def rehearse(self, age, n, old):
        x, upper = age[old].astype(np.float64), n[old]
        if not self.cfg.budget_match:
            return self.unmatched(x, upper)
        budget = PowerLawSchedule(self.cfg).rehearse(age, n, old)
        if self.cfg.match == "stored":
            return self.allocate(x, upper, int(budget.sum()))
        # old[k] picks phase k's old tasks; boolean indexing is row-major, so each phase is one contiguous run
        bounds = np.concatenate([[0], np.cumsum(old.sum(1))])
        return np.concatenate([np.zeros(0, dtype=np.int64)] + [
            self.allocate(x[a:b], upper[a:b], int(budget[a:b].sum())) for a, b in zip(bounds[:-1], bounds[1:])])

    def allocate(self, x: np.ndarray, upper: np.ndarray, total: int) -> np.ndarray:
        """Counts within [1, upper] for tasks of ages x summing to `total`."""
        raise NotImplementedError

    def unmatched(self, x: np.ndarray, upper: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@SCHEDULES.register("uniform")
class UniformSchedule(BudgetMatched):
    """The same count for every old task (experience replay's environment): in every phase (match=stored),
    or within each phase (match=exposure)."""

    def unmatched(self, x, upper):
        count = self.cfg.uniform_count or 1
        return np.minimum(np.full(upper.shape, count), upper)

    def allocate(self, x, upper, total):
        return _exact_round(np.full(upper.shape, total / max(len(upper), 1), dtype=np.float64), total, upper)


@SCHEDULES.register("exponential")
class ExponentialSchedule(BudgetMatched):
    """n(x) = N * exp(-rate * x); the rate is fitted (bisection) so the total matches the power law's budget
    (over the run, or per phase with match=exposure)."""

    def unmatched(self, x, upper):
        rate = self.cfg.exp_rate if self.cfg.exp_rate is not None else 1.0
        return np.clip(np.round(upper * np.exp(-rate * x)), 1, upper).astype(np.int64)

    def allocate(self, x, upper, total):
        curve = lambda rate: np.clip(upper * np.exp(-rate * x), 1, upper)  # noqa: E731
        lo, hi = 0.0, 50.0
        for _ in range(200):  # total is decreasing in the rate
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if curve(mid).sum() > total else (lo, mid)
        return _exact_round(curve(hi), total, upper)


def phase_indices(stream: Stream, counts_row: np.ndarray, phase: int, seed: int, nested: bool):
    """(base indices, task ids) of the samples that phase `phase` trains on."""
    idx, tids = [], []
    for task_id, count in enumerate(counts_row.tolist()):
        if count <= 0:
            continue
        task = stream.tasks[task_id]
        # nested: one permutation per task for the whole run; independent: a fresh one per phase
        index = (task_id,) if nested else (task_id, phase)
        gen = generator(seed, "schedule_subset", *index)
        perm = torch.randperm(task.n_train, generator=gen).to(task.train_idx.device)
        chosen = task.train_idx[perm[:count]]
        idx.append(chosen)
        tids.append(torch.full_like(chosen, task_id))
    return torch.cat(idx), torch.cat(tids)
