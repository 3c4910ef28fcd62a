"""Streams on the real MNIST / Fashion-MNIST files; CIFAR on small files written in CIFAR's format."""
import pickle

import numpy as np
import pytest
import torch
import torchvision

from cltrain.errors import ConfigError, DataMissingError
from cltrain.streams.base import STREAMS
from cltrain.streams.loader import PhaseLoader, Segment
from conftest import quick_config


def build(*overrides):
    cfg = quick_config("bench/pmnist_naive", *overrides)
    return STREAMS.get(cfg.stream.name)(cfg)


def test_same_seed_same_stream_and_tasks_differ():
    a, b = build("seed=3"), build("seed=3")
    c = build("seed=4")
    assert torch.equal(a.transform.perms, b.transform.perms)
    assert all(torch.equal(x.train_idx, y.train_idx) for x, y in zip(a.tasks, b.tasks))
    assert not torch.equal(a.transform.perms[1], c.transform.perms[1])
    # task 0 is the identity, the others are distinct permutations
    assert torch.equal(a.transform.perms[0], torch.arange(784))
    assert len({tuple(p.tolist()) for p in a.transform.perms}) == 3


def test_permuted_batches_are_the_permuted_images():
    stream = build("seed=0")
    ref = torchvision.datasets.MNIST(str(stream_root()), train=True, download=False)
    idx = stream.tasks[1].train_idx[:5]
    x = stream.transform(stream.train.images[idx], torch.full((5,), 1))
    expected = ((ref.data[idx].view(5, -1)[:, stream.transform.perms[1]].float() / 255 - 0.1307) / 0.3081)
    assert torch.allclose(x.view(5, -1), expected, atol=1e-6)


def stream_root():
    import os
    return os.environ["CLTRAIN_DATA"]


@pytest.mark.parametrize("family, extra", [("permuted", ()), ("rotated", ()), ("split", ("stream.n_tasks=5",))])
def test_unit_pixels_are_the_raw_intensities_over_255(family, extra):
    """stream.pixels=unit: every image family feeds x/255; the default standardises by the dataset's mean and sd."""
    unit, standard = (build(f"stream.name={family}", f"stream.pixels={p}", "seed=0", *extra)
                      for p in ("unit", "standardised"))
    ref = torchvision.datasets.MNIST(str(stream_root()), train=True, download=False)
    idx = unit.tasks[0].train_idx[:64]  # task 0: the identity permutation, the unrotated images
    tids = torch.zeros(64, dtype=torch.long)
    raw = ref.data[idx].view(64, -1).float() / 255
    for x in (unit.transform(unit.train.images[idx], tids), unit.transform.for_task(unit.train.images[idx], 0)):
        if family == "rotated":  # grid_sample at 0 degrees rounds in the last bits
            assert torch.allclose(x.view(64, -1), raw, atol=1e-5)
        else:  # the same floats: blank pixels exactly 0
            assert torch.equal(x.view(64, -1), raw)
    assert torch.allclose(standard.transform(standard.train.images[idx], tids).view(64, -1), (raw - 0.1307) / 0.3081,
                          atol=1e-5)


def test_pad_permutes_the_padded_image_over_all_its_positions():
    """stream.pad=2 (van de Ven & Tolias's 32x32 MNIST): the model sees 1,024 inputs; task 0 is the digit inside a
    blank border, and a permuted task scatters the digit's pixels over all 1,024 positions, border included."""
    stream = build("stream.pad=2", "stream.pixels=unit", "seed=0")
    assert stream.input_shape == (1, 32, 32) and stream.transform.perms.shape[1] == 1024
    ref = torchvision.datasets.MNIST(str(stream_root()), train=True, download=False)
    idx = stream.tasks[0].train_idx[:64]
    first = stream.transform(stream.train.images[idx], torch.zeros(64, dtype=torch.long))
    assert torch.equal(first[:, 0, 2:30, 2:30], ref.data[idx].float() / 255)  # the digit, unmoved
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert first[:, 0][:, border].abs().sum() == 0  # blank
    later = stream.transform.for_task(stream.train.images[idx], 2)
    # the same values, moved: and some of the digit's pixels now sit where the border was
    assert torch.equal(later.view(64, -1).sort(1).values, first.view(64, -1).sort(1).values)
    assert later[:, 0][:, border].abs().sum() > 0
    split = build("stream.name=split", "stream.n_tasks=5", "stream.pad=3")
    assert split.input_shape == (1, 34, 34) and split.train.images.shape[-2:] == (34, 34)


def test_mixed_task_batch_is_transformed_per_row():
    """One call transforms a batch mixing tasks exactly as row-by-row calls would."""
    stream = build("stream.name=rotated", "stream.n_tasks=4")
    idx = torch.arange(12)
    tids = torch.tensor([0, 1, 2, 3] * 3)
    whole = stream.transform(stream.train.images[idx], tids)
    rows = torch.cat([stream.transform(stream.train.images[i:i + 1], tids[i:i + 1]) for i in range(12)])
    assert torch.allclose(whole, rows, atol=1e-5)
    # a 90-degree rotation really rotates the digit
    r90 = stream.transform.__class__(torch.tensor([90.0]), (0.0,), (1.0,))
    img = stream.train.images[:1]
    rotated = r90(img, torch.zeros(1, dtype=torch.long))[0, 0]
    assert torch.allclose(rotated, torch.rot90(img[0, 0].float() / 255, 1), atol=0.02)


def test_split_mnist_class_and_task_incremental():
    stream = build("stream.name=split", "stream.n_tasks=5", "stream.train_per_task=null")
    assert [t.classes for t in stream.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for task in stream.tasks:
        assert set(stream.train.labels[task.train_idx].unique().tolist()) == set(task.classes)
    assert sum(t.n_train for t in stream.tasks) == 60000
    assert stream.class_mask() is None
    ti = build("stream.name=split", "stream.n_tasks=5", "stream.scenario=task_incremental")
    mask = ti.class_mask()
    assert mask.shape == (5, 10) and mask[2].nonzero().view(-1).tolist() == [4, 5]


def test_split_mnist_shuffled_class_order():
    natural = build("stream.name=split", "stream.n_tasks=5")
    a = build("stream.name=split", "stream.n_tasks=5", "stream.class_order=shuffled", "seed=1")
    b = build("stream.name=split", "stream.n_tasks=5", "stream.class_order=shuffled", "seed=1")
    c = build("stream.name=split", "stream.n_tasks=5", "stream.class_order=shuffled", "seed=2")
    order = [cls for t in a.tasks for cls in t.classes]
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert [t.classes for t in a.tasks] == [t.classes for t in b.tasks]  # the run's seed decides the pairs
    assert [t.classes for t in a.tasks] != [t.classes for t in c.tasks]
    for task in a.tasks:
        assert set(a.train.labels[task.train_idx].unique().tolist()) == set(task.classes)
    # natural order: the pairs and the subsamples as before the key existed (its draw has a generator of its own)
    assert [t.classes for t in natural.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert torch.equal(natural.tasks[0].train_idx, build("stream.name=split", "stream.n_tasks=5").tasks[0].train_idx)
    # task-incremental: each task's mask opens its own (shuffled) classes
    ti = build("stream.name=split", "stream.n_tasks=5", "stream.class_order=shuffled", "seed=1",
               "stream.scenario=task_incremental")
    assert [ti.class_mask()[k].nonzero().view(-1).tolist() for k in range(5)] == [sorted(t.classes) for t in a.tasks]


def test_split_mnist_domain_incremental_labels_follow_the_shuffled_pairs():
    di = build("stream.name=split", "stream.n_tasks=5", "stream.class_order=shuffled", "seed=1",
               "stream.scenario=domain_incremental", "stream.train_per_task=null")
    digits = torchvision.datasets.MNIST(stream_root(), train=True, download=False).targets
    for task in di.tasks:
        pair = task.meta["classes"]
        assert task.classes == [0, 1]
        rows = task.train_idx
        # the first digit of the task's pair is label 0, the second label 1
        assert torch.equal(di.train.labels[rows], (digits[rows] == pair[1]).long())
    natural = build("stream.name=split", "stream.n_tasks=5", "stream.scenario=domain_incremental")
    assert torch.equal(natural.train.labels, digits % 2)


def test_class_order_is_read_by_split_streams_only():
    with pytest.raises(ConfigError, match="stream.class_order='shuffled' is not read by stream.name='permuted'"):
        quick_check("stream.class_order=shuffled")
    with pytest.raises(ConfigError, match="class_order.*natural, shuffled"):
        quick_check("stream.name=split", "stream.n_tasks=5", "stream.class_order=random")


def quick_check(*overrides):
    from cltrain.resolve import check_config

    return check_config(quick_config("bench/pmnist_naive", *overrides))


def test_fashion_mnist_stream_loads_real_data():
    stream = build("stream.dataset=fashion_mnist", "stream.name=split", "stream.n_tasks=5")
    assert stream.train.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(stream.test.labels).tolist() == [1000] * 10


def test_split_stream_rejects_uneven_task_counts():
    with pytest.raises(ConfigError, match="stream.n_tasks.*valid: 1, 2, 5, 10"):
        build("stream.name=split", "stream.n_tasks=3")


def _write_cifar10(root, n_train=50, n_test=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": (np.arange(n) % 10).tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_train // 5), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_split_cifar10_reads_cifar_format(tmp_path, monkeypatch):
    _write_cifar10(tmp_path)
    # torchvision checks the md5 of the real archives; our small files are in the same format but not those bytes
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    stream = build("stream.name=split", "stream.dataset=cifar10", "stream.n_tasks=5", f"data.root={tmp_path}",
                   "data.download=false", "model.name=lenet")
    assert stream.input_shape == (3, 32, 32)
    assert [t.classes for t in stream.tasks][0] == [0, 1]
    loader = PhaseLoader(stream, [Segment(0, stream.tasks[0].train_idx, torch.zeros_like(stream.tasks[0].train_idx), 1)],
                         batch_size=4, seed=0)
    batch = next(iter(loader))
    assert batch.x.shape == (4, 3, 32, 32) and set(batch.y.tolist()) <= {0, 1}


def test_missing_data_names_the_folder(tmp_path):
    with pytest.raises(DataMissingError) as err:
        build(f"data.root={tmp_path}", "data.download=false")
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)


def test_loader_hides_task_ids_and_reshuffles_each_pass():
    stream = build()
    idx = stream.tasks[0].train_idx[:256]
    seg = Segment(0, idx, torch.zeros_like(idx), n_batches=4)  # two passes of two batches
    loader = PhaseLoader(stream, [seg], batch_size=128, seed=0, hide_task_ids=True)
    batches = list(loader)
    assert len(batches) == 4 == len(loader)
    assert all(b.t is None for b in batches)
    first_pass = torch.cat([batches[0].y, batches[1].y])
    second_pass = torch.cat([batches[2].y, batches[3].y])
    assert sorted(first_pass.tolist()) == sorted(second_pass.tolist())  # the same data...
    assert not torch.equal(first_pass, second_pass)  # ...in a new order
    again = list(PhaseLoader(stream, [seg], batch_size=128, seed=0, hide_task_ids=True))
    assert all(torch.equal(a.x, b.x) for a, b in zip(batches, again))  # and deterministic
