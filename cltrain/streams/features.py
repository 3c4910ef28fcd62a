"""Frozen 512-d features for the binary IBCL streams, from a small CNN trained on data outside the sequence.

The IBCL paper feeds frozen ImageNet ResNet-18 features to a small Bayesian head. Offline we have no ImageNet
weights, so the extractor is a small CNN trained to classify the *other* dataset (Fashion-MNIST for MNIST
sequences and vice versa): no image of the task sequence is ever seen by it. It is trained once, and the
features of both splits are computed once; both are cached under `$CLTRAIN_CACHE` (default
~/.cache/cltrain; never the read-only data root) with a JSON record of the recipe and a SHA-256 of the
stored tensors, so a changed recipe or a damaged file is recomputed instead of silently reused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from cltrain.streams.datasets import DATASETS, ImageArrays, load_split

# Which dataset trains the extractor for a sequence over each dataset.
OUTSIDE = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}
RECIPE_VERSION = 1  # bump when FeatureCNN or the training loop changes: old caches are then recomputed


@dataclass(frozen=True)
class ExtractorSpec:
    source: str  # the dataset the extractor is trained to classify
    dim: int = 512
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCNN(nn.Module):
    """Two conv blocks and a dim-wide ReLU layer (the features), plus a classifier used only for training."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, dim), nn.ReLU(),
        )
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def cache_dir() -> Path:
    return Path(os.environ.get("CLTRAIN_CACHE") or Path.home() / ".cache" / "cltrain") / "features"


def _normalise(images: torch.Tensor, name: str) -> torch.Tensor:
    spec = DATASETS.get(name)
    return (images.float() / 255.0 - spec.mean[0]) / spec.std[0]


def train_extractor(spec: ExtractorSpec, root: Path, download: bool) -> FeatureCNN:
    data = load_split(spec.source, root, True, download)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        net = FeatureCNN(spec.dim, DATASETS.get(spec.source).n_classes)
        opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
        x_all = _normalise(data.images, spec.source)
        for _ in range(spec.epochs):
            order = torch.randperm(len(data.labels), generator=gen)
            for start in range(0, len(order), spec.batch_size):
                rows = order[start:start + spec.batch_size]
                loss = F.cross_entropy(net(x_all[rows]), data.labels[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@torch.no_grad()
def _embed(net: FeatureCNN, images: torch.Tensor, name: str, batch: int = 2000) -> torch.Tensor:
    return torch.cat([net.body(_normalise(images[i:i + batch], name)) for i in range(0, len(images), batch)])


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_cached(path: Path, record: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    stored = json.loads(meta.read_text())
    if {k: stored.get(k) for k in record} != record:
        return None
    data = torch.load(path, weights_only=True)
    if _digest([data["train"], data["test"]]) != stored.get("sha256"):
        return None  # damaged or partly written: recompute
    return data["train"], data["test"]


def _save_atomic(path: Path, train: torch.Tensor, test: torch.Tensor, record: dict) -> None:
    """Write to a private temp name, then rename: concurrent runs (tests, DDP ranks) never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    torch.save({"train": train, "test": test}, tmp)
    meta_tmp = tmp.with_suffix(".json")
    meta_tmp.write_text(json.dumps({**record, "sha256": _digest([train, test])}, indent=1))
    os.replace(tmp, path)
    os.replace(meta_tmp, path.with_suffix(".json"))


def _cache_entry(dataset: str, train: ImageArrays, test: ImageArrays) -> tuple[Path, dict]:
    """Where `dataset`'s features are cached, and the record a cached file must match."""
    spec = ExtractorSpec(OUTSIDE[dataset])
    record = {"dataset": dataset, "extractor": dataclasses.asdict(spec), "recipe_version": RECIPE_VERSION,
              "n_train": len(train.labels), "n_test": len(test.labels)}
    return cache_dir() / f"{dataset}-{spec.key()}.pt", record


def extractor_needed(dataset: str, root: Path) -> Optional[str]:
    """The dataset an extractor must be trained on before `dataset`'s features exist (None: they are cached)."""
    train, test = load_split(dataset, root, True, False), load_split(dataset, root, False, False)
    path, record = _cache_entry(dataset, train, test)
    return None if _load_cached(path, record) is not None else OUTSIDE[dataset]


def load_features(dataset: str, root: Path, download: bool) -> tuple[ImageArrays, ImageArrays, dict]:
    """Train/test features (float32 [N, 512]) of `dataset` with its original labels, and the cache record."""
    spec = ExtractorSpec(OUTSIDE[dataset])
    train, test = load_split(dataset, root, True, download), load_split(dataset, root, False, download)
    path, record = _cache_entry(dataset, train, test)
    cached = _load_cached(path, record)
    if cached is None:
        net = train_extractor(spec, root, download)
        # float16 on disk halves the cache; every run reads the same rounded values, so runs stay comparable
        cached = (_embed(net, train.images, dataset).half(), _embed(net, test.images, dataset).half())
        _save_atomic(path, *cached, record)
    return (ImageArrays(cached[0].float(), train.labels), ImageArrays(cached[1].float(), test.labels),
            {**record, "cache": str(path)})
