"""The heavy half of `cltrain ibcl-model` (cltrain/ibcl_model.py): load a finished IBCL run and write one weight
vector of its Bayesian head as an exported torch program. Kept apart so the CLI parses and refuses bad input
without importing torch."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cltrain.errors import ConfigError


def load_run(run_dir: Path):
    """The run's config, stream and IBCL learner with the knowledge base of its last checkpoint."""
    from omegaconf import OmegaConf

    from cltrain.config import ExperimentConfig, merge_checked
    from cltrain.experiment import resolve_components
    from cltrain.nn.registry import MODELS
    from cltrain.run import RunFolder
    from cltrain.streams.base import STREAMS

    run = RunFolder(run_dir)
    if not (run_dir / "config.yaml").is_file() or not run.last_checkpoint.is_file():
        raise ConfigError(f"{run_dir} is not a run folder with a checkpoint (config.yaml, checkpoints/last.pt); "
                          f"valid: the run_dir of an IBCL run")
    cfg: ExperimentConfig = OmegaConf.to_object(merge_checked(ExperimentConfig, OmegaConf.load(run_dir / "config.yaml")))
    if cfg.learner.get("name") != "ibcl":
        raise ConfigError(f"{run_dir} is a {cfg.learner.get('name')!r} run; valid: the run_dir of an IBCL run")
    parts = resolve_components(cfg)
    stream = STREAMS.get(cfg.stream.name)(cfg)
    model = MODELS.get(cfg.model.name)(cfg.model, stream.input_shape, stream.n_classes)
    learner = parts.learner_cls(model, cfg.optim, parts.method_cfg, seed=cfg.seed)
    learner.load_state_dict(run.load_checkpoint()["learner"])
    if not learner.kb.phase_tasks:
        raise ConfigError(f"{run_dir} has not finished a task yet; valid: a run with at least one finished phase")
    return cfg, stream, learner


def as_module(dims: list[int], theta: torch.Tensor) -> nn.Sequential:
    """A plain torch MLP holding one weight vector of the Bayesian head."""
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(_unflatten(dims, theta)):
        linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(w)
            linear.bias.copy_(b)
        layers += [linear] + ([nn.ReLU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers).eval()


def save_program(module: nn.Module, n_in: int, out: Path) -> None:
    example = (torch.zeros(2, n_in),)
    program = torch.export.export(module, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(out))


def _unflatten(dims: list[int], theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, at = [], 0
    for n_in, n_out in zip(dims[:-1], dims[1:]):
        w = theta[at:at + n_in * n_out].reshape(n_out, n_in)
        at += n_in * n_out
        out.append((w, theta[at:at + n_out]))
        at += n_out
    return out
