"""GPU/NCCL correctness proved on the CPU: collectives only through cltrain.distributed, on the group's device,
and state restored from a checkpoint (loaded on the CPU) placed on the module's device once per fit."""
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import cltrain
from cltrain.config import OptimConfig
from cltrain.distributed import CHECK_ENV, CollectiveCheckError, all_sum, collective_check
from cltrain.learners.tame import TAME, TAMEConfig
from cltrain.nn.lenet import LeNet5
from cltrain.plugins.base import PluginContext
from cltrain.plugins.facilitation import Facilitation, FacilitationConfig
from cltrain.plugins.pruning import Pruning, PruningConfig, global_magnitude_prune
from cltrain.plugins.replay import Replay, ReplayConfig

META = torch.device("meta")  # a device that is not the CPU: anything left behind on the CPU shows


@pytest.fixture()
def gloo_group():
    """A real one-process gloo group (the collectives run; torch.distributed is initialised)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _from_cltrain_file(name: str, source: str):
    """A function compiled as if it lived in cltrain/<name> (a plugin issuing its own collective)."""
    scope: dict = {"dist": dist, "torch": torch}
    exec(compile(source, str(Path(cltrain.__file__).parent / name), "exec"), scope)
    return scope["run"]


def test_collective_check_rejects_collectives_issued_outside_cltrain_distributed(gloo_group, monkeypatch):
    monkeypatch.setenv(CHECK_ENV, "1")
    stray = _from_cltrain_file("plugins/stray.py", "def run(t):\n    dist.all_reduce(t)\n    return t\n")
    with collective_check():
        assert torch.equal(all_sum(torch.ones(3)), torch.ones(3))  # world size 1: no collective at all
        dist.all_reduce(torch.ones(3))  # not cltrain code (Lightning's own collectives look like this): allowed
        with pytest.raises(CollectiveCheckError, match="called from stray.py"):
            stray(torch.ones(3))
        with pytest.raises(CollectiveCheckError, match="tensors on"):  # off the group's device (gloo: CPU)
            dist.all_reduce(torch.ones(3, device=META))
    stray(torch.ones(3))  # outside the block (or without the variable) torch.distributed is untouched


def test_collective_check_is_off_without_the_variable(gloo_group, monkeypatch):
    monkeypatch.delenv(CHECK_ENV, raising=False)
    stray = _from_cltrain_file("plugins/stray.py", "def run(t):\n    dist.all_reduce(t)\n    return t\n")
    with collective_check():
        stray(torch.ones(3))


def test_all_sum_reaches_torch_distributed_with_a_tensor_on_the_group_device(gloo_group, monkeypatch):
    """With more than one rank all_sum is one all_reduce of a copy on the group's device (gloo: the CPU); the
    caller's tensor is left alone."""
    import cltrain.distributed as d

    seen = []
    original = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: (seen.append(t.device), original(t, op=op)))
    monkeypatch.setattr(d, "world_size", lambda: 2)  # take the collective path in one process
    mine = torch.arange(3.0)
    out = d.all_sum(mine)
    assert seen == [torch.device("cpu")] and torch.equal(out, torch.arange(3.0)) and out is not mine


def test_restored_plugin_state_moves_to_the_module_device_at_fit_start():
    ctx = PluginContext(seed=0, batch_size=8)
    module = torch.nn.Linear(2, 2).to(META)
    module.device = META  # what a LightningModule reports

    facilitation = Facilitation(FacilitationConfig(), ctx)
    facilitation.load_state_dict({"iters": [], "acc": [], "tasks": [], "task": 1,
                                  "counts": [torch.tensor([3, 4]), torch.tensor([5, 8])]})
    facilitation.on_train_start(None, module)
    assert {c.device for c in facilitation.counts} == {META}

    replay = Replay(ReplayConfig(capacity=4), ctx)
    replay.buffer.add(torch.rand(6, 2), torch.arange(6), torch.zeros(6, dtype=torch.long))
    saved = replay.buffer.state_dict()  # CPU tensors, as a checkpoint loads them
    replay.on_train_start(None, module)
    assert {replay.buffer.x.device, replay.buffer.y.device, replay.buffer.t.device} == {META}

    pruning = Pruning(PruningConfig(capacity=4), ctx)
    pruning.load_state_dict({"buffer": saved, "n_pruned": 1, "masks": {"weight": torch.ones(2, 2, dtype=torch.bool)}})
    pruning.on_train_start(None, module)
    assert pruning.masks["weight"].device == META and pruning.buffer.x.device == META


def test_tame_restored_masks_and_buffers_move_to_its_device_once():
    factory = lambda: LeNet5(1, 28, 10)  # noqa: E731
    learner = TAME(factory(), OptimConfig(), TAMEConfig(), None, factory)
    learner.masks = [global_magnitude_prune(learner.experts[0], 0.5)]  # on the CPU, as a checkpoint loads them
    learner.sel_buffer.add(torch.rand(4, 1, 28, 28), torch.arange(4), torch.zeros(4, dtype=torch.long))
    learner.to(META)
    learner.on_train_start()
    assert {m.device for m in learner.masks[0].values()} == {META}
    assert learner.sel_buffer.x.device == META


@pytest.mark.parametrize("name", ["ewc", "si"])
def test_regularisers_restored_state_moves_to_the_module_device(name):
    """EWC's Fisher/anchors and SI's importances come back from a checkpoint on the CPU; their penalty mixes them
    with the parameters every step, so they must be on the parameters' device before training resumes."""
    from cltrain.learners.base import LEARNERS

    cls = LEARNERS.get(name)
    learner = cls(torch.nn.Linear(3, 2), OptimConfig(), cls.Config())
    state = {"weight": torch.ones(2, 3), "bias": torch.ones(2)}
    if name == "ewc":
        learner.set_extra_state({"fishers": [state], "anchors": [dict(state)]})
    else:
        learner.set_extra_state({k: dict(state) for k in learner._STATE})
    learner.to(META)
    learner.on_train_start()
    tensors = _tensors(learner.get_extra_state())
    assert len(tensors) >= 4 and {t.device for t in tensors} == {META}


def _tensors(tree) -> list:
    if isinstance(tree, torch.Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [t for v in values for t in _tensors(v)]


def test_loader_batches_keep_one_device_when_the_stream_is_placed_after_its_segments_were_cut(monkeypatch):
    """The trainer cuts a phase's segment before the fit that places the stream on the training device (CUDA):
    every batch must still have inputs, labels and task ids on that device (task ids left on the CPU broke replay
    and facilitation on a GPU). `meta` stands in for the GPU: anything left on the CPU shows."""
    from conftest import quick_config
    from cltrain.streams.base import STREAMS
    from cltrain.streams.loader import PhaseLoader, Segment
    from cltrain.streams.schedules import phase_indices

    cfg = quick_config("bench/pmnist_naive", "stream.n_tasks=2")
    stream = STREAMS.get("permuted")(cfg)
    idx, tids = phase_indices(stream, np.array([500, 500]), 0, cfg.seed, True)
    segment = Segment(0, idx, tids, 3)
    assert segment.idx.device.type == "cpu"
    stream.to(META)
    # meta tensors hold no values: the loader's one-task check (a value read) is answered "mixed" here
    monkeypatch.setattr("cltrain.streams.loader.single_task", lambda task_ids: None)
    batches = list(PhaseLoader(stream, [segment], 128, cfg.seed))
    assert len(batches) == 3
    assert all({b.x.device, b.y.device, b.t.device} == {META} for b in batches)
