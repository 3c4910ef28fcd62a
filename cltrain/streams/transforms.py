"""Batch transforms: uint8 images + task ids -> normalised float inputs, on the device, for a whole batch.

Each task's transform (a pixel permutation, a rotation) is a row of a parameter table indexed by task id, so a
batch mixing several tasks is transformed by one gather / one grid-sample rather than a loop over samples.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchTransform(nn.Module):
    """Normalise: x uint8 [B, C, H, W] -> float, (x/255 - mean) / std. Subclasses add per-task changes."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        # In place on a fresh copy: the same element-wise operations (so the same floats) as
        # (x/255 - mean) / std, without two more batch-sized allocations per call.
        return x.to(torch.float32, copy=True).div_(255.0).sub_(self.mean).div_(self.std)

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.normalise(x)

    def for_task(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """The same as forward(x, [task_id] * B) for a batch of one task's rows; subclasses make it cheaper."""
        return self(x, torch.full((x.shape[0],), task_id, dtype=torch.long, device=x.device))


class PermuteTransform(BatchTransform):
    """Permuted MNIST: task t reorders the pixels by perms[t] (the same order for every channel)."""

    def __init__(self, perms: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__(mean, std)
        self.register_buffer("perms", perms.long())

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        index = self.perms.index_select(0, task_ids).unsqueeze(1).expand(b, c, h * w)  # = perms[task_ids], ~5x faster
        return self.normalise(torch.gather(flat, 2, index).view(b, c, h, w))

    def for_task(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        # One task: gather with the task's permutation broadcast over the batch (a stride-0 view, no [B, C, H*W]
        # int64 index in memory). Same values as forward(); on the CPU ~2x faster than index_select on the
        # last dimension, which copies uint8 columns one by one (measured on 128- and 2,000-row batches).
        b, c, h, w = x.shape
        index = self.perms[task_id].view(1, 1, h * w).expand(b, c, h * w)
        return self.normalise(torch.gather(x.reshape(b, c, h * w), 2, index).view(b, c, h, w))


def rotation_affine(theta: torch.Tensor) -> torch.Tensor:
    """[N] angles (radians) -> [N, 2, 3] affine matrices rotating about the image centre, as F.affine_grid takes."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


class RotateTransform(BatchTransform):
    """Rotated MNIST: task t rotates the image by angles[t] degrees about its centre (bilinear, zero fill)."""

    def __init__(self, angles_deg: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__(mean, std)
        self.register_buffer("angles", angles_deg.float() * (math.pi / 180.0))
        # Every task's sampling grid, per image shape and device, made on first use: on a CPU affine_grid took
        # ~6x the grid_sample it feeds (2.5 ms against 0.4 ms for 128 MNIST images), and a task's grid never
        # changes. Derived data, not state: not a buffer, so checkpoints and state dicts are as before.
        self._grids: dict[tuple, torch.Tensor] = {}

    def grids(self, x: torch.Tensor) -> torch.Tensor:
        """[n_tasks, H, W, 2]: row t is what affine_grid gives for angles[t] (on the CPU the same floats as a
        batch's own affine_grid gives its rows of task t: checked bit for bit in tests/test_materialise.py)."""
        # keyed by the angles' storage and version too: a load_state_dict or in-place change makes new grids
        key = (tuple(x.shape[1:]), self.angles.device, self.angles.data_ptr(), self.angles._version)
        if key not in self._grids:
            self._grids[key] = F.affine_grid(rotation_affine(self.angles), [len(self.angles), *x.shape[1:]],
                                             align_corners=False)
        return self._grids[key]

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self._rotate(x, self.grids(x).index_select(0, task_ids))

    def for_task(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        grid = self.grids(x)[task_id:task_id + 1].expand(x.shape[0], -1, -1, -1)
        return self._rotate(x, grid)

    def _rotate(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        # Rotate the raw intensities, then normalise, so the zero fill is black like the MNIST background.
        rotated = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return rotated.div_(255.0).sub_(self.mean).div_(self.std)
