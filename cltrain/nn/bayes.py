"""Mean-field Gaussian layers and a Bayesian MLP head, with several independent *chains* trained at once.

Every weight w has a mean mu and a std sigma = softplus(rho); a forward pass draws w = mu + sigma * eps
(the reparameterisation trick). A leading chain dimension C holds C independent posteriors (IBCL's prior
chains): one batched matmul per layer trains them all in one step. Priors are diagonal Gaussians stored as
buffers (never in the autograd graph), so a posterior copied into the next task's prior is detached.

Flat views: `posterior()` returns each chain's (mu, sigma) as [C, P] vectors over all P weights and biases, and
`functional(x, theta)` evaluates M deterministic weight vectors theta [M, P] in one batched pass; the
knowledge base and zero-shot models of IBCL work on these vectors.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cltrain.config import ModelConfig
from cltrain.nn.registry import MODELS


def inv_softplus(y: torch.Tensor | float) -> torch.Tensor:
    y = torch.as_tensor(y, dtype=torch.float32)
    return y + torch.log(-torch.expm1(-y))


def gaussian_kl(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) per coordinate, in closed form."""
    return torch.log(sigma_p / sigma_q) + (sigma_q.pow(2) + (mu_q - mu_p).pow(2)) / (2 * sigma_p.pow(2)) - 0.5


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [B, in] (shared) or [M, B, in]; weight [M, out, in]; bias [M, out] -> [M, B, out]."""
    return torch.matmul(x, weight.transpose(-1, -2)) + bias.unsqueeze(-2)


class BayesLinear(nn.Module):
    """C chains of a mean-field Gaussian Linear layer; chain c has prior N(0, prior_scales[c]^2)."""

    def __init__(self, n_in: int, n_out: int, prior_scales: Sequence[float], sigma_init: float):
        super().__init__()
        c = len(prior_scales)
        bound = 1.0 / math.sqrt(n_in)  # nn.Linear's initialisation of the means
        # Every chain starts from the same means: IBCL averages posteriors of different chains parameter-wise,
        # which only means something for hidden layers when the chains' hidden units correspond (differently
        # initialised MLPs are permutations of each other, and their average is no model of either).
        self.weight_mu = nn.Parameter(torch.empty(1, n_out, n_in).uniform_(-bound, bound).repeat(c, 1, 1))
        self.bias_mu = nn.Parameter(torch.empty(1, n_out).uniform_(-bound, bound).repeat(c, 1))
        self.weight_rho = nn.Parameter(torch.full((c, n_out, n_in), float(inv_softplus(sigma_init))))
        self.bias_rho = nn.Parameter(torch.full((c, n_out), float(inv_softplus(sigma_init))))
        scales = torch.tensor(list(prior_scales), dtype=torch.float32)
        self.register_buffer("prior_weight_mu", torch.zeros(c, n_out, n_in))
        self.register_buffer("prior_bias_mu", torch.zeros(c, n_out))
        self.register_buffer("prior_weight_sigma", scales.view(c, 1, 1).expand(c, n_out, n_in).clone())
        self.register_buffer("prior_bias_sigma", scales.view(c, 1).expand(c, n_out).clone())

    @property
    def n_params(self) -> int:
        return self.weight_mu[0].numel() + self.bias_mu[0].numel()

    def forward(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        w, b = self.weight_mu, self.bias_mu
        if sample:
            w = w + F.softplus(self.weight_rho) * torch.randn_like(w)
            b = b + F.softplus(self.bias_rho) * torch.randn_like(b)
        return batched_linear(x, w, b)

    def kl(self) -> torch.Tensor:
        """[C]: each chain's KL to its prior (analytic)."""
        kw = gaussian_kl(self.weight_mu, F.softplus(self.weight_rho), self.prior_weight_mu, self.prior_weight_sigma)
        kb = gaussian_kl(self.bias_mu, F.softplus(self.bias_rho), self.prior_bias_mu, self.prior_bias_sigma)
        return kw.flatten(1).sum(1) + kb.sum(1)


class BayesMLP(nn.Module):
    """A Bayesian ReLU MLP of any widths, in C chains: forward(x [B, D]) -> logits [C, B, n_out]."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, prior_scales: Sequence[float] = (1.0,),
                 sigma_init: float = 0.01):
        super().__init__()
        self.dims = [n_in, *hidden, n_out]
        self.prior_scales = list(prior_scales)
        self.layers = nn.ModuleList(
            BayesLinear(a, b, prior_scales, sigma_init) for a, b in zip(self.dims[:-1], self.dims[1:])
        )

    @property
    def n_chains(self) -> int:
        return len(self.prior_scales)

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    def forward(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h, sample)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def kl(self) -> torch.Tensor:
        return sum(layer.kl() for layer in self.layers)

    # ---- flat views ------------------------------------------------------------------------------------
    def _flat(self, weight: str, bias: str, fn=lambda t: t) -> torch.Tensor:
        parts = []
        for layer in self.layers:
            parts += [fn(getattr(layer, weight)).flatten(1), fn(getattr(layer, bias))]
        return torch.cat(parts, 1)

    @torch.no_grad()
    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each chain's variational posterior as flat (mu, sigma), [C, P] each, detached."""
        return self._flat("weight_mu", "bias_mu"), self._flat("weight_rho", "bias_rho", F.softplus)

    @torch.no_grad()
    def prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._flat("prior_weight_mu", "prior_bias_mu"), self._flat("prior_weight_sigma", "prior_bias_sigma")

    def unflatten(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[M, P] -> per layer (weight [M, out, in], bias [M, out]); views, no copies."""
        out, at = [], 0
        for n_in, n_out in zip(self.dims[:-1], self.dims[1:]):
            w = theta[:, at:at + n_in * n_out].reshape(-1, n_out, n_in)
            at += n_in * n_out
            out.append((w, theta[:, at:at + n_out]))
            at += n_out
        return out

    @torch.no_grad()
    def _assign(self, weight: str, bias: str, flat: torch.Tensor) -> None:
        for layer, (w, b) in zip(self.layers, self.unflatten(flat)):
            getattr(layer, weight).copy_(w)
            getattr(layer, bias).copy_(b)

    def set_prior(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        """Each chain's prior <- the given [C, P] Gaussians (copied into buffers: no graph to earlier tasks)."""
        self._assign("prior_weight_mu", "prior_bias_mu", mu)
        self._assign("prior_weight_sigma", "prior_bias_sigma", sigma)

    def set_posterior(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self._assign("weight_mu", "bias_mu", mu)
        self._assign("weight_rho", "bias_rho", inv_softplus(sigma.float()).to(mu.device))

    def functional(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Logits [M, B, n_out] of M fixed weight vectors theta [M, P] on x [B, D], in one batched pass."""
        h = x.flatten(1)
        layers = self.unflatten(theta)
        for i, (w, b) in enumerate(layers):
            h = batched_linear(h, w, b)
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h


def n_outputs(n_classes: int) -> int:
    """Binary tasks get one logit (Bernoulli likelihood, as in the IBCL paper); others one per class."""
    return 1 if n_classes == 2 else n_classes


@MODELS.register("bayes_mlp")
def build_bayes_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return BayesMLP(math.prod(input_shape), list(cfg.hidden), n_outputs(n_classes))
