"""cltrain.seeding: one derived generator per random consumer; nothing depends on torch's global RNG position."""
import subprocess
import sys

import torch

from conftest import REPO
from cltrain.config import OptimConfig, load_config
from cltrain.learners.tame import TAME, TAMEConfig
from cltrain.nn.lenet import LeNet5
from cltrain.seeding import derive_seed, generator, seeded
from cltrain.streams.base import STREAMS
from cltrain.streams.loader import PhaseLoader, Segment


def test_derived_seeds_are_stable_across_processes_and_distinct_per_purpose_and_index():
    here = [derive_seed(3, "model", 0), derive_seed(3, "loader_order", 2, 1)]
    code = "from cltrain.seeding import derive_seed; print(derive_seed(3, 'model', 0), derive_seed(3, 'loader_order', 2, 1))"
    other = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert [int(v) for v in other.stdout.split()] == here  # not Python's per-process salted hash()
    seeds = {derive_seed(s, p, *i) for s in (0, 1) for p in ("model", "replay_buffer") for i in ((), (0,), (1,), (0, 1))}
    assert len(seeds) == 16 and all(0 <= v < 2 ** 63 for v in seeds)
    a, b = generator(0, "replay_buffer"), generator(0, "replay_buffer")
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))


def test_seeded_block_neither_reads_nor_moves_the_global_rng():
    torch.manual_seed(123)
    with seeded(0, "model", 1):
        first = torch.nn.Linear(4, 4).weight.detach().clone()
    after = torch.rand(3)
    torch.manual_seed(999)  # a different global position
    torch.rand(17)
    with seeded(0, "model", 1):
        second = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(first, second)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # the block did not consume global draws


def test_spawned_expert_does_not_depend_on_when_it_is_spawned():
    """TAME's expert j is initialised from (seed, "model", j): the same network whatever ran before it (a hidden
    phase boundary used to reseed the global RNG one batch early, moving every later spawn)."""
    factory = lambda: LeNet5(1, 28, 10)  # noqa: E731

    def spawn_after(global_draws: int, seed: int = 5) -> torch.Tensor:
        with seeded(seed, "model", 0):
            learner = TAME(factory(), OptimConfig(), TAMEConfig(), None, factory, seed=seed)
        torch.rand(global_draws)  # whatever training consumed before the shift
        j = learner._spawn()
        return torch.cat([p.detach().flatten() for p in learner.experts[j].parameters()])

    assert torch.equal(spawn_after(0), spawn_after(1000))
    assert not torch.equal(spawn_after(0), spawn_after(0, seed=6))  # ...but it does depend on the run seed


def test_loader_leaves_the_global_rng_alone_across_hidden_boundaries():
    cfg = load_config("tame/split_mnist", ["stream.train_per_task=300", "stream.test_per_task=10"])
    stream = STREAMS.get("split")(cfg)
    segments = [Segment(k, t.train_idx, torch.full_like(t.train_idx, t.id), 4) for k, t in enumerate(stream.tasks)]
    torch.manual_seed(42)
    expected = torch.get_rng_state()
    batches = list(PhaseLoader(stream, segments, 100, seed=0, hide_task_ids=True))
    assert len(batches) == 4 * len(segments) > 4
    assert torch.equal(torch.get_rng_state(), expected)
