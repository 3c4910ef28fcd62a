"""The stacked copy of TAME's experts: refreshed where they changed, the same values as a fresh stack."""
import pytest
import torch
from torch.func import stack_module_state

from cltrain.config import OptimConfig, load_config
from cltrain.learners.tame import TAME, TAMEConfig
from cltrain.nn.lenet import LeNet5
from cltrain.nn.stacked import StackedModules
from cltrain.streams.base import STREAMS
from cltrain.streams.loader import PhaseLoader, Segment

pytestmark = pytest.mark.usefixtures("one_thread")


def _modules(n: int) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [LeNet5(1, 28, 10) for _ in range(n)]


def _same_as_fresh(stacked, modules) -> bool:
    fresh = stack_module_state(modules)
    return all(torch.equal(got[k], want[k]) for got, want in zip(stacked, fresh) for k in want)


def _sgd_step(module: torch.nn.Module) -> None:
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module(torch.randn(4, 1, 28, 28)).sum().backward()
    opt.step()


def test_a_trained_module_is_copied_again_and_the_others_are_not_restacked():
    modules, stacked = _modules(3), StackedModules()
    first = stacked(modules)
    tensors = {k: v for part in first for k, v in part.items()}
    before = first[0]["features.0.weight"].clone()
    _sgd_step(modules[1])
    second = stacked(modules)
    assert _same_as_fresh(second, modules)  # module 1's new weights are in its slice
    assert all(second[0][k] is tensors[k] for k in second[0])  # updated in place: no new stack
    assert not torch.equal(second[0]["features.0.weight"][1], before[1])  # the step did move it
    assert torch.equal(second[0]["features.0.weight"][0], before[0])


def test_in_place_masks_and_loaded_weights_are_seen():
    modules, stacked = _modules(2), StackedModules()
    stacked(modules)
    with torch.no_grad():
        modules[0].features[0].weight.mul_(torch.rand_like(modules[0].features[0].weight) > 0.5)
    assert _same_as_fresh(stacked(modules), modules)
    modules[1].load_state_dict(_modules(3)[2].state_dict())
    assert _same_as_fresh(stacked(modules), modules)


def test_a_new_module_or_new_storage_restacks_everything():
    modules, stacked = _modules(2), StackedModules()
    stacked(modules)
    modules.append(LeNet5(1, 28, 10))
    params, _ = stacked(modules)
    assert params["features.0.weight"].shape[0] == 3 and _same_as_fresh((params, _), modules)
    modules = [m.double() for m in modules]  # new tensors (as .to(device) makes them)
    params, buffers = stacked(modules)
    assert params["features.0.weight"].dtype == torch.float64 and _same_as_fresh((params, buffers), modules)


def test_writes_through_data_need_invalidate():
    """The documented contract: `.data` writes move no version counter (DDP broadcasts write that way)."""
    modules, stacked = _modules(2), StackedModules()
    stacked(modules)
    modules[0].features[0].weight.data.add_(1.0)
    assert not _same_as_fresh(stacked(modules), modules)  # the stamps cannot see it ...
    stacked.invalidate()
    assert _same_as_fresh(stacked(modules), modules)  # ... so the writer says so


def _batches(n: int):
    cfg = load_config("tame/split_mnist", ["stream.train_per_task=600", "stream.test_per_task=10"])
    stream = STREAMS.get("split")(cfg)
    task = stream.tasks[1]
    seg = Segment(0, task.train_idx, torch.full_like(task.train_idx, 1), n)  # n batches
    return list(PhaseLoader(stream, [seg], 64, seed=0, hide_task_ids=True))


def test_tame_scores_on_the_cached_stack_equal_scores_on_a_fresh_one():
    """Real MNIST batches; the active expert trains, another is spawned and pruned between scorings."""
    torch.manual_seed(0)
    factory = lambda: LeNet5(1, 28, 10)  # noqa: E731
    learner = TAME(factory(), OptimConfig(), TAMEConfig(expert_prune_epochs=1), None, factory)
    learner._ensure_optimizers()
    batches = _batches(6)

    def fresh(x, y):
        learner._stacked.invalidate()
        return learner.score_experts(x, y)

    for i, batch in enumerate(batches):
        if i == 2:
            learner._spawn()
            learner._ensure_optimizers()
        if i == 4:  # prune the first expert on what the buffer holds, as a shift does
            learner.prune_buffer.add(batch.x, batch.y, torch.zeros_like(batch.y))
            learner._prune_expert(0)
        cached = learner.score_experts(batch.x, batch.y)
        assert torch.equal(cached, fresh(batch.x, batch.y)), i
        expert, opt = learner.experts[learner.active], learner._opts[learner.active]
        opt.zero_grad()
        learner.train_loss(expert(batch.x), batch.y).backward()  # _train_active's step, without a Trainer
        opt.step()
        learner.active = len(learner.experts) - 1
    assert len(learner.experts) == 2 and learner.masks[0] is not None
