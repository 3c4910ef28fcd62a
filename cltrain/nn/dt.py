"""A small decision transformer (Chen et al. 2021) for offline RL on robot tasks, as in L2M's backbone.

Inputs are context windows packed into one tensor x [B, K, S + 2 + A] (state, return-to-go, a valid flag
that is 0 on padding before an episode's start, then the A action-token ids as floats; the stream builds
these, cltrain/streams/metaworld.py). Every step becomes 2 + A tokens: return-to-go, state, one token per
action dimension (binned). Actions are predicted one dimension at a time: the state token predicts dimension
0, the token of dimension d predicts d + 1 (causal attention), so decoding a step takes A forwards
(`decode_actions`) and training is one teacher-forced forward. The logits come as [B, bins, K, A], the
layout `F.cross_entropy` takes, so the generic learners (fine-tuning, EWC) train it unchanged.

Attention projections and the MLP's layers are `Modulated` wrappers: methods attach LoRA / (IA)^3 pools
there (cltrain/nn/modulators.py) without touching the frozen weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cltrain.config import ModelConfig, component_config
from cltrain.errors import ConfigError
from cltrain.nn.modulators import POOL_HOSTS, Modulated, PoolHost
from cltrain.nn.registry import MODELS


@dataclass
class DTConfig:
    width: int = 128
    layers: int = 3
    heads: int = 4
    pretrained: Optional[str] = None  # a checkpoint (a run's checkpoints/last.pt, or a state_dict file)


class Block(nn.Module):
    """Pre-norm transformer block with separate q/k/v projections (so each can carry its own modulator)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v = (Modulated(nn.Linear(width, width)) for _ in range(3))
        self.o = nn.Linear(width, width)
        self.fc1 = Modulated(nn.Linear(width, 4 * width))
        self.act = Modulated(nn.GELU())
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, w = h.shape
        x = self.ln1(h)
        split = lambda t: t.view(b, n, self.heads, w // self.heads).transpose(1, 2)  # noqa: E731
        att = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=mask)
        h = h + self.o(att.transpose(1, 2).reshape(b, n, w))
        return h + self.fc2(self.act(self.fc1(self.ln2(h))))


class DecisionTransformer(nn.Module):
    def __init__(self, context: int, state_dim: int, act_dim: int, bins: int, width: int, layers: int, heads: int):
        super().__init__()
        self.context, self.state_dim, self.act_dim, self.bins = context, state_dim, act_dim, bins
        self.per_step = 2 + act_dim
        self.state_emb = nn.Linear(state_dim, width)
        self.rtg_emb = nn.Linear(1, width)
        self.act_emb = nn.Embedding(act_dim * bins + 1, width)  # + 1: "not chosen yet" (the step being decoded)
        self.pos_emb = nn.Parameter(torch.zeros(context * self.per_step, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, bins)
        nn.init.normal_(self.pos_emb, std=0.02)
        self.register_buffer("dim_offset", torch.arange(act_dim) * bins, persistent=False)

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.state_dim
        return x[..., :s], x[..., s:s + 1], x[..., s + 1], x[..., s + 2:].long()

    def state_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K, width] embeddings of the states (the L2M query is their mean over valid steps)."""
        return self.state_emb(self.parts(x)[0])

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state, rtg, valid, acts = self.parts(x)
        unknown = acts < 0
        act_ids = torch.where(unknown, torch.full_like(acts, self.act_dim * self.bins), acts + self.dim_offset)
        steps = torch.cat([self.rtg_emb(rtg).unsqueeze(2), self.state_emb(state).unsqueeze(2),
                           self.act_emb(act_ids)], dim=2)  # [B, K, 2 + A, W]
        b, k = x.shape[:2]
        h = steps.reshape(b, k * self.per_step, -1) + self.pos_emb[-k * self.per_step:]
        token_valid = valid.bool().repeat_interleave(self.per_step, dim=1)
        return h, token_valid

    def forward(self, x: torch.Tensor, prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, bins, K, A] of every step's action dimensions; `prefix` [B, P, W]: tokens put in front
        (prompt methods), visible to every position."""
        h, valid = self.tokens(x)
        p = 0 if prefix is None else prefix.shape[1]
        if p:
            h = torch.cat([prefix, h], dim=1)
            valid = torch.cat([torch.ones_like(valid[:, :p]), valid], dim=1)
        n = h.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        # padding before the episode's start is hidden; every token still sees itself (no empty softmax rows)
        mask = (causal & valid[:, None, :]) | torch.eye(n, dtype=torch.bool, device=x.device)
        mask = mask[:, None]  # [B, 1, n, n] over heads
        for block in self.blocks:
            h = block(h, mask)
        b, k = x.shape[:2]
        steps = self.ln(h[:, p:]).view(b, k, self.per_step, -1)
        return self.head(steps[:, :, 1:1 + self.act_dim]).permute(0, 3, 1, 2)  # state, a_0..a_{A-2} -> a_0..a_{A-1}


@torch.no_grad()
def decode_actions(logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, state_dim: int, act_dim: int) -> torch.Tensor:
    """Greedy action ids [B, A] of the last step of windows x, one dimension at a time (A forwards)."""
    x = x.clone()
    col = state_dim + 2
    x[:, -1, col:] = -1
    for d in range(act_dim):
        x[:, -1, col + d] = logits(x)[:, :, -1, d].argmax(1).to(x.dtype)
    return x[:, -1, col:].long()


def load_weights(model: nn.Module, path: str) -> None:
    """Weights from a state_dict file, or the model part of a cltrain checkpoint (`learner` -> `model.*`)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "learner" in state:  # a run's checkpoints/last.pt
        state = {k[len("model."):]: v for k, v in state["learner"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=False)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ConfigError(f"pre-trained checkpoint {path} lacks weights {sorted(missing)[:3]}...; "
                          f"was it made with the same model.options?")


def check_dt(cfg: ModelConfig) -> DTConfig:
    """Resolve `model.options` for the decision transformer; the pre-trained checkpoint must exist."""
    opts = component_config(cfg.options, DTConfig, "model.options")
    for key in ("width", "layers", "heads"):
        if getattr(opts, key) <= 0:
            raise ConfigError(f"bad value {getattr(opts, key)!r} for 'model.options.{key}'; valid: an integer > 0")
    if opts.width % opts.heads:
        raise ConfigError(f"model.options.width={opts.width} is not a multiple of model.options.heads={opts.heads}")
    if opts.pretrained is not None and not Path(opts.pretrained).expanduser().is_file():
        raise ConfigError(f"pre-trained checkpoint model.options.pretrained={opts.pretrained!r} not found; make it "
                          f"once with `cltrain fit l2m/pretrain` (see docs/results/l2m.md), or give its path")
    return opts


@MODELS.register("dt")
def build_dt(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """input_shape = (context, state dim, action dim) and n_classes = action bins (a robot stream's shape)."""
    opts = check_dt(cfg)
    if len(input_shape) != 3:
        raise ConfigError(f"model.name='dt' needs a robot stream (stream.name=metaworld); got inputs {input_shape}")
    context, state_dim, act_dim = input_shape
    model = DecisionTransformer(context, state_dim, act_dim, n_classes, opts.width, opts.layers, opts.heads)
    if opts.pretrained is not None:
        load_weights(model, str(Path(opts.pretrained).expanduser()))
    return model


build_dt.check = check_dt  # run at config resolution, before a run folder exists


def _dt_targets(model: DecisionTransformer, kind: str) -> list[tuple[Modulated, int, int]]:
    """LoRA: attention query and value outputs and the MLP's first layer; (IA)^3: keys, values, MLP activation."""
    out = []
    for block in model.blocks:
        if kind == "lora":
            out += [(m, m.base.in_features, m.base.out_features) for m in (block.q, block.v, block.fc1)]
        else:
            width = block.q.base.in_features
            out += [(block.k, width, width), (block.v, width, width), (block.act, 4 * width, 4 * width)]
    return out


def _dt_query(model: DecisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The mean of the frozen state embeddings over each window's valid steps (no extra pass, no gradient)."""
    with torch.no_grad():
        emb = model.state_embedding(x)
        valid = x[..., model.state_dim + 1:model.state_dim + 2]
        return (emb * valid).sum(1) / valid.sum(1).clamp(min=1)


POOL_HOSTS.register("dt")(PoolHost(DecisionTransformer, _dt_targets, _dt_query, lambda m: m.state_emb.out_features))
