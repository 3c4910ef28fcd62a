"""Readers for the IBCL paper's image datasets, as binary task sequences: Split CIFAR-100 pairs and CelebA attributes.

Neither dataset is available offline here, so no experiment uses them yet; the readers are tested on small files
written in the datasets' own on-disk formats. They read the files directly rather than through torchvision's
classes, which insist on the official archives' MD5 sums (so a subset, or a re-packed copy, would not load).

- CIFAR-100 (torchvision's `cifar-100-python/` folder: pickled `train` / `test` dicts with `data` [N, 3072]
  uint8 and `fine_labels`): task k tells fine class 2k (label 0) from 2k+1 (label 1), up to 50 tasks; the
  paper's Split CIFAR-100 has 10 binary tasks.
- CelebA (torchvision's `celeba/` folder: `list_attr_celeba.txt`, `list_eval_partition.txt`,
  `img_align_celeba/*.jpg`): task a is "has attribute a" (labels 0/1 from the +1/-1 table); the paper uses 15
  attribute tasks.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cltrain.errors import DataMissingError
from cltrain.streams.datasets import ImageArrays


@dataclass
class BinaryTaskArrays:
    name: str
    train: ImageArrays  # images uint8 [N, C, H, W], labels 0/1
    test: ImageArrays


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataMissingError(f"{what} not found at {path}; put the dataset there in torchvision's layout")
    return path


def _cifar100_split(root: Path, split: str) -> ImageArrays:
    with open(_need(root / "cifar-100-python" / split, f"CIFAR-100 {split} file"), "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    images = torch.as_tensor(np.asarray(entry["data"], dtype=np.uint8)).view(-1, 3, 32, 32)
    return ImageArrays(images, torch.as_tensor(entry["fine_labels"], dtype=torch.long))


def cifar100_pair_tasks(root: Path, n_tasks: int = 10) -> list[BinaryTaskArrays]:
    if not 1 <= n_tasks <= 50:
        raise ValueError(f"n_tasks={n_tasks}; valid: 1..50 (pairs of the 100 fine classes)")
    train, test = _cifar100_split(Path(root), "train"), _cifar100_split(Path(root), "test")

    def pick(arrays: ImageArrays, a: int, b: int) -> ImageArrays:
        rows = torch.nonzero((arrays.labels == a) | (arrays.labels == b), as_tuple=True)[0]
        return ImageArrays(arrays.images[rows], (arrays.labels[rows] == b).long())
    return [BinaryTaskArrays(f"cifar100-{2 * k}-vs-{2 * k + 1}", pick(train, 2 * k, 2 * k + 1),
                             pick(test, 2 * k, 2 * k + 1)) for k in range(n_tasks)]


def _celeba_tables(folder: Path) -> tuple[list[str], list[str], torch.Tensor, dict[str, int]]:
    lines = _need(folder / "list_attr_celeba.txt", "CelebA attribute table").read_text().splitlines()
    names = lines[1].split()
    files, values = [], []
    for line in lines[2:]:
        if line.strip():
            parts = line.split()
            files.append(parts[0])
            values.append([int(v) for v in parts[1:]])
    partition = {}
    for line in _need(folder / "list_eval_partition.txt", "CelebA partition list").read_text().splitlines():
        if line.strip():
            name, part = line.split()
            partition[name] = int(part)
    return names, files, torch.tensor(values), partition


def _read_images(folder: Path, files: list[str], size: int) -> torch.Tensor:
    from PIL import Image

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, name in enumerate(files):  # decoding JPEGs is per file; done once when the stream is built
        with Image.open(_need(folder / "img_align_celeba" / name, "CelebA image")) as img:
            pixels = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
        out[i] = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    return out


def celeba_attribute_tasks(root: Path, attributes: Optional[list[str]] = None, n_tasks: int = 15,
                           image_size: int = 64) -> list[BinaryTaskArrays]:
    """One binary task per attribute (default: the table's first n_tasks); train = partition 0, test = 2."""
    folder = Path(root) / "celeba"
    names, files, values, partition = _celeba_tables(folder)
    chosen = attributes or names[:n_tasks]
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise ValueError(f"unknown CelebA attributes {unknown}; valid: {', '.join(names)}")
    parts = torch.tensor([partition.get(f, -1) for f in files])
    images = _read_images(folder, files, image_size)
    labels = (values > 0).long()
    tasks = []
    for attr in chosen:
        column = labels[:, names.index(attr)]
        split = [torch.nonzero(parts == p, as_tuple=True)[0] for p in (0, 2)]
        tasks.append(BinaryTaskArrays(f"celeba-{attr}", *(ImageArrays(images[s], column[s]) for s in split)))
    return tasks
