"""Whole image datasets as uint8 tensors, read with torchvision's readers (its on-disk layout, its download)."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision

from cltrain.errors import DataMissingError
from cltrain.registry import Registry


@dataclass(frozen=True)
class VisionSpec:
    """How to read one dataset and how to normalise it."""

    folder: str  # torchvision's folder under the data root (for the error message)
    reader: Callable[..., object]
    n_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: Registry[VisionSpec] = Registry("dataset", "stream.dataset")
DATASETS.register("mnist")(VisionSpec("MNIST/raw", torchvision.datasets.MNIST, 10, (0.1307,), (0.3081,)))
DATASETS.register("fashion_mnist")(
    VisionSpec("FashionMNIST/raw", torchvision.datasets.FashionMNIST, 10, (0.2860,), (0.3530,))
)
DATASETS.register("cifar10")(
    VisionSpec("cifar-10-batches-py", torchvision.datasets.CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
)
DATASETS.register("cifar100")(
    VisionSpec("cifar-100-python", torchvision.datasets.CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
)


@dataclass
class ImageArrays:
    """A dataset split as tensors: images uint8 [N, C, H, W], labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor


@contextmanager
def _socket_timeout(seconds: float):
    """torchvision's download has no timeout; without one an offline machine can hang instead of failing."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _as_arrays(ds: object) -> ImageArrays:
    data = torch.as_tensor(ds.data)
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # CIFAR is stored NHWC
    return ImageArrays(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long))


def load_split(name: str, root: Path, train: bool, download: bool) -> ImageArrays:
    """Load one split, downloading only when allowed; fail with one clear message otherwise."""
    spec = DATASETS.get(name)
    where = Path(root) / spec.folder
    try:
        return _as_arrays(spec.reader(str(root), train=train, download=False))
    except RuntimeError as missing:
        if not download:
            raise DataMissingError(_missing_message(name, where, str(missing))) from None
    try:
        with _socket_timeout(20):
            return _as_arrays(spec.reader(str(root), train=train, download=True))
    except Exception as exc:  # network errors come in many types; all mean the same to the user
        reason = "download failed: " + " ".join(str(exc).split())[:300]  # one line, however the library formats it
        raise DataMissingError(_missing_message(name, where, reason)) from None


def _missing_message(name: str, where: Path, reason: str) -> str:
    return (
        f"dataset {name!r} not found in {where} ({reason}); put torchvision's files there, "
        f"or point data.root / $CLTRAIN_DATA at a folder that has them"
    )
