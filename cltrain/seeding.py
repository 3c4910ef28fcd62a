"""One rule for every random number a run draws: a seed derived from (run seed, purpose, index...).

Every random consumer owns its generator instead of sharing torch's global RNG, so no consumer's draws depend
on how many numbers another one took before it, or on *when* it runs (a hidden phase boundary, a resume):

    derive_seed(seed, "loader_order", phase, pass_no)   -> int (63 bits)
    generator(seed, "replay_buffer")                      -> torch.Generator seeded with derive_seed(...)
    with seeded(seed, "model", j): net = build()          -> torch's global CPU RNG forked and seeded for
                                                             code that draws from it (nn.Module init)

Purposes in use (grep for them): model (j: the run's j-th network; TAME's expert j), loader_order (phase,
pass), schedule_subset (task[, phase]), task_samples (task), replay_buffer, pruning_buffer, pruning_finetune
(round), tame_selector_buffer, tame_prune_buffer, tame_prune (round), tame_selector and tame_eval_selector
(0 init, 1 shuffling, 2 pruning), torch_global (the global RNG that in-model randomness such as dropout uses;
seeded once at the start of a run, continued from the checkpoint on resume).

The hash is a cryptographic digest of the parts' text, so it is stable across processes, machines and Python
versions (Python's hash() of a str is salted per process) and unrelated purposes never collide in practice.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import torch

_MASK = (1 << 63) - 1


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """A 63-bit seed for one random consumer: the same (seed, purpose, index) always gives the same value."""
    text = ":".join([str(int(seed)), purpose, *(str(int(i)) for i in index)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & _MASK


def generator(seed: int, purpose: str, *index: int) -> torch.Generator:
    """A CPU torch.Generator of its own for (seed, purpose, index)."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *index))


@contextmanager
def seeded(seed: int, purpose: str, *index: int) -> Iterator[None]:
    """Run a block that draws from torch's global CPU RNG (module constructors do) with a derived seed,
    restoring the global RNG afterwards: the block's draws neither depend on nor move anyone else's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, purpose, *index))
        yield


def rng_snapshot(device: torch.device) -> dict[str, Any]:
    """torch's global RNG state (CPU, and the CUDA device trained on), as a checkpoint stores it."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def rng_restore(state: dict[str, Any], device: torch.device) -> None:
    """Put back what rng_snapshot saved (a resumed run continues the global RNG where the checkpoint left it)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
