"""IBCL's knowledge base (a finitely generated credal set) and its zero-shot models, as plain tensor math.

Posteriors are fully factorised Gaussians over the P weights of the head, kept as flat vectors (mu, sigma).

Distance: the 2-Wasserstein distance between diagonal Gaussians, sqrt(||mu - mu'||^2 + ||sigma - sigma'||^2),
divided by sqrt(P): the root-mean-square distance per weight, so one threshold d fits heads of any size
(d = 0.01 means the two posteriors differ by 0.01 per weight on average, in the W2 sense). The reference code
counts sigma twice and divides by P instead; our d is therefore not numerically the paper's d.

Zero-shot model for a preference w over the tasks seen so far: each of task k's m extremes gets weight
beta = w_k / m, and the barycenter is N(sum beta mu, (sum beta sigma)^2) per weight (the W2 barycenter of
Gaussians that share a diagonal form). Its highest-density region at level 1 - alpha is, per weight,
mu_hat +- z sigma_hat with z = Phi^-1(1 - alpha/2); models are drawn from the barycenter restricted to that
region, independently per weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

_STD_NORMAL = torch.distributions.Normal(0.0, 1.0)


def w2_distance(mu: torch.Tensor, sigma: torch.Tensor, mu_ref: torch.Tensor, sigma_ref: torch.Tensor) -> torch.Tensor:
    """Normalised W2 distance of (mu, sigma) [P] to each of (mu_ref, sigma_ref) [E, P] -> [E]."""
    sq = (mu_ref - mu).pow(2).sum(-1) + (sigma_ref - sigma).pow(2).sum(-1)
    return sq.sqrt() / mu.shape[-1] ** 0.5


@dataclass
class KnowledgeBase:
    """Stored posteriors (extreme points) and, for each phase, which entries stand for its task's m chains."""

    mu: Optional[torch.Tensor] = None  # [E, P]
    sigma: Optional[torch.Tensor] = None
    task: list[int] = field(default_factory=list)  # per entry: the task it was learned on
    chain: list[int] = field(default_factory=list)  # per entry: its prior chain
    phase: list[int] = field(default_factory=list)  # per entry: the phase that added it
    phase_tasks: list[int] = field(default_factory=list)  # per phase: its task
    phase_extremes: list[list[int]] = field(default_factory=list)  # per phase: one entry per chain (maybe reused)

    def __len__(self) -> int:
        return len(self.task)

    def add_or_substitute(self, mu: torch.Tensor, sigma: torch.Tensor, task: int, chain: int, phase: int,
                          d: float) -> int:
        """Store a new posterior unless a stored one lies within d (then that one stands in). Returns its index."""
        if self.mu is not None:
            dist = w2_distance(mu, sigma, self.mu, self.sigma)
            nearest = int(dist.argmin())
            if float(dist[nearest]) <= d and d > 0:
                return nearest
        self.mu = mu[None].clone() if self.mu is None else torch.cat([self.mu, mu[None]])
        self.sigma = sigma[None].clone() if self.sigma is None else torch.cat([self.sigma, sigma[None]])
        self.task.append(task)
        self.chain.append(chain)
        self.phase.append(phase)
        return len(self.task) - 1

    def record_phase(self, task: int, extremes: list[int]) -> None:
        self.phase_tasks.append(task)
        self.phase_extremes.append(list(extremes))

    def extremes_at(self, phase: int) -> dict[int, list[int]]:
        """Task -> its extremes as known after `phase` (a recurring task: its latest phase's extremes)."""
        out: dict[int, list[int]] = {}
        for p in range(phase + 1):
            out[self.phase_tasks[p]] = self.phase_extremes[p]
        return out

    def size_at(self, phase: int) -> int:
        return sum(1 for p in self.phase if p <= phase)

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "KnowledgeBase":
        return cls(**state)


def barycenter(mu: torch.Tensor, sigma: torch.Tensor, groups: torch.Tensor, w: torch.Tensor):
    """groups [T, m] entry indices per task, w [T] a preference -> (mu_hat, sigma_hat) [P], beta = w_k / m."""
    beta = (w / groups.shape[1]).to(mu)[:, None, None]
    return (beta * mu[groups]).sum((0, 1)), (beta * sigma[groups]).sum((0, 1))


def hdr_z(alpha: float) -> float:
    """Half-width of the per-weight highest-density interval at level 1 - alpha, in standard deviations."""
    return float(_STD_NORMAL.icdf(torch.tensor(1.0 - alpha / 2)))


def sample_region(mu: torch.Tensor, sigma: torch.Tensor, alpha: float, k: int, generator: torch.Generator) -> torch.Tensor:
    """k draws [k, P] from N(mu, sigma^2) restricted to mu +- z sigma, independently per weight (inverse CDF)."""
    u = torch.rand(k, mu.numel(), generator=generator, dtype=torch.float64) * (1 - alpha) + alpha / 2
    return mu + sigma * _STD_NORMAL.icdf(u).to(mu)
