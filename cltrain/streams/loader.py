"""The fast path: batches are slices of index tensors into device-resident uint8 arrays, transformed per batch.

A `PhaseLoader` walks through one or more `Segment`s (one per training phase) and is what Lightning's
`fit` iterates. Task-aware runs fit one segment at a time; task-agnostic runs fit all segments in one go,
so the learner sees a single unbroken stream while the trainer still knows where the boundaries are.

Materialising: a segment drawn often enough (MIN_PASSES epochs or more) is transformed once, in chunks, when
its inputs fit `materialise_bytes` (trainer.materialise_mb); its batches are then row slices of that tensor.
A transform depends on the row alone, so the batches are the same values either way (tests/test_materialise.py);
other segments are transformed batch by batch (a segment of one task through the transform's cheaper
single-task path).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from cltrain.seeding import generator, rng_restore
from cltrain.streams.base import Stream, Task


class Batch:
    """A training batch. `t` (task ids) is None when the stream hides tasks from the learner.

    Plugins may append samples (replay); `n_new` keeps how many of the rows came from the stream, and
    `n_global` how many rows the global batch has over all DDP ranks (this rank holds rows rank::world).
    Deliberately not a dataclass: Lightning deep-copies dataclass batches on every step while walking them for
    device transfer, and ours are created on the training device already.
    """

    __slots__ = ("x", "y", "t", "n_new", "n_global")

    def __init__(self, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor], n_new: int,
                 n_global: Optional[int] = None):
        self.x, self.y, self.t, self.n_new = x, y, t, n_new
        self.n_global = n_new if n_global is None else n_global

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def extend(self, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor]) -> None:
        self.x = torch.cat([self.x, x])
        self.y = torch.cat([self.y, y])
        if self.t is not None and t is not None:
            self.t = torch.cat([self.t, t])


@dataclass
class Segment:
    """The data of one phase: base-train indices with their task ids, and how many batches to draw."""

    phase: int
    idx: torch.Tensor
    task_ids: torch.Tensor
    n_batches: int
    skip: int = 0  # batches already trained before a preemption; the loader starts after them
    # resuming: torch's global RNG as the checkpoint saved it, restored just before the first batch drawn
    rng_state: Optional[dict] = None
    # mixed boundary batches: rows of this segment that the previous phase's last batch already took
    offset: int = 0

    def n_samples(self, batch_size: int) -> int:
        """Rows in this segment's aligned batches: whole passes, then the first batches of one more pass."""
        n = self.idx.numel()
        passes, extra = divmod(self.n_batches, math.ceil(n / batch_size))
        return passes * n + min(extra * batch_size, n)

    @staticmethod
    def batches_for(n_samples: int, batch_size: int, epochs: int, steps: Optional[int]) -> int:
        return steps if steps is not None else epochs * math.ceil(n_samples / batch_size)


def task_rows(task: Task, n: int, seed: int, split: str = "train") -> torch.Tensor:
    """Up to n seeded rows (indices into Stream.train) of a task's training or validation split: what the
    trainer's `samples` hook hands a learner, and what `cltrain merge` draws again for the same run."""
    pool = task.val_idx if split == "val" else task.train_idx
    purpose = "val_samples" if split == "val" else "task_samples"
    pick = torch.randperm(pool.numel(), generator=generator(seed, purpose, task.id))[:n]
    return pool[pick.to(pool.device)]


class PhaseLoader:
    """Iterates the batches of consecutive segments; reshuffles every pass over a segment's data.

    Shuffling uses a generator of its own per (phase, pass) (cltrain.seeding, purpose "loader_order"), so a
    run resumed at phase k draws exactly what the uninterrupted run drew. The loader never reseeds torch's
    global RNG at a segment start (that would tie in-model randomness to where hidden boundaries fall); a
    resumed segment only puts back the global RNG state its checkpoint saved (`Segment.rng_state`).
    Under DDP every rank draws the same global batch and keeps rows rank::world of it: the union over ranks
    is the single-process batch, which keeps DDP runs comparable with single-process runs.
    """

    def __init__(self, stream: Stream, segments: list[Segment], batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, hide_task_ids: bool = False, mixed: bool = False,
                 materialise_bytes: int = 0):
        self.stream = stream
        self.segments = segments
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.hide_task_ids = hide_task_ids
        self.materialise_bytes = materialise_bytes
        self._rows_of: Optional[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None
        self.mixed = mixed
        self._lengths: list[int] = []
        if mixed:  # only then: an aligned loader keeps its segments exactly as given (empty ones too)
            self._lengths = [s.n_samples(batch_size) for s in segments]
            self._count_mixed_batches()

    def __len__(self) -> int:
        return sum(s.n_batches - s.skip for s in self.segments)

    @property
    def boundaries(self) -> list[int]:
        """Cumulative batch counts: segment i ends after batch boundaries[i] - 1."""
        out, total = [], 0
        for segment in self.segments:
            total += segment.n_batches - segment.skip
            out.append(total)
        return out

    def _order(self, segment: Segment, pass_no: int) -> torch.Tensor:
        gen = generator(self.seed, "loader_order", segment.phase, pass_no)
        return torch.randperm(segment.idx.numel(), generator=gen).to(segment.idx.device)

    def _segment_batches(self, segment: Segment) -> Iterator[Batch]:
        n, drawn, pass_no = segment.idx.numel(), 0, 0
        self._rows_of = self._rows_source(segment)  # segment rows -> (x, y); may hold a materialised phase
        try:
            while drawn < segment.n_batches:
                order = self._order(segment, pass_no)
                for start in range(0, n, self.batch_size):
                    if drawn == segment.n_batches:
                        return
                    if drawn >= segment.skip:
                        if drawn == segment.skip and segment.rng_state is not None:
                            rng_restore(segment.rng_state, segment.idx.device)
                        global_rows = order[start:start + self.batch_size]
                        yield self._make(segment, global_rows[self.rank::self.world_size], global_rows.numel())
                    drawn += 1
                pass_no += 1
        finally:
            self._rows_of = None  # the materialised phase is freed with its segment

    def _make(self, segment: Segment, rows: torch.Tensor, n_global: int) -> Batch:
        """The batch of `rows` (positions in the segment); one seam where tests count what the loader hands over."""
        x, y = self._rows_of(rows)
        t = None if self.hide_task_ids else segment.task_ids.index_select(0, rows)
        return Batch(x, y, t, int(y.shape[0]), n_global)

    def _batch(self, base: torch.Tensor, t: torch.Tensor, n_global: int) -> Batch:
        x, y = self.stream.train_batch(base, t)
        return Batch(x, y, None if self.hide_task_ids else t, int(y.shape[0]), n_global)

    def _rows_source(self, segment: Segment) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """How a batch's rows (positions in the segment) become (inputs, targets): per batch, or sliced from the
        segment transformed once."""
        task = single_task(segment.task_ids)

        def per_batch(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            base, task_ids = segment.idx.index_select(0, rows), segment.task_ids.index_select(0, rows)
            return self.stream.train_batch(base, task_ids, task)

        draws = (segment.n_batches - segment.skip) * self.batch_size // self.world_size
        if self.materialise_bytes <= 0 or draws < MIN_PASSES.get(segment.idx.device.type, 1) * segment.idx.numel():
            return per_batch
        whole = materialise(self.stream, segment.idx, segment.task_ids, task, self.materialise_bytes)
        if whole is None:
            return per_batch
        x_all, y_all = whole
        return lambda rows: (x_all.index_select(0, rows), y_all.index_select(0, rows))  # = x_all[rows], faster

    def __iter__(self) -> Iterator[Batch]:
        # A segment is cut before its fit starts, and the first fit is what moves the stream to the training
        # device: indices made then are still on the CPU, and batches must not mix devices (task ids on the
        # CPU beside inputs on the GPU broke replay and facilitation on CUDA).
        for segment in self.segments:
            segment.idx, segment.task_ids = segment.idx.to(self.stream.device), segment.task_ids.to(self.stream.device)
        if self.mixed:
            yield from self._mixed_batches()
            return
        for segment in self.segments:
            yield from self._segment_batches(segment)

    # ---- mixed boundary batches ---------------------------------------------------------------------------
    # The rows of all segments, each in its aligned order (same shuffles, same passes), are read as ONE sequence
    # and cut into full batches: the batch at a task boundary holds the old task's last rows and the new task's
    # first ones, as a stream batched straight through (the TAME paper's code) would. A phase ends with the
    # batch holding its segment's last row; its n_batches is rewritten to that count (what the trainer steps).

    def _count_mixed_batches(self) -> None:
        first, bs = self.segments[0], self.batch_size
        remaining, ended = -(first.offset + first.skip * bs), 0  # rows of the fit up to each segment's end
        for segment, length in zip(self.segments, self._lengths):
            remaining += length
            end = -(-remaining // bs)
            if end <= ended:
                raise ValueError(f"phase {segment.phase} holds fewer rows than the boundary batch takes from it "
                                 f"({length} rows, batch {bs}); mixed boundary batches need longer phases")
            segment.n_batches = end - ended + segment.skip
            ended = end

    def _flat_rows(self, segment: Segment, length: int) -> torch.Tensor:
        """Positions into segment.idx in the order the aligned batches draw them."""
        passes = -(-length // segment.idx.numel())
        return torch.cat([self._order(segment, p) for p in range(passes)])[:length]

    def _mixed_batches(self) -> Iterator[Batch]:
        first, bs = self.segments[0], self.batch_size
        if first.rng_state is not None:
            rng_restore(first.rng_state, first.idx.device)
        pieces: list[tuple[Segment, torch.Tensor]] = []
        held = 0
        for i, (segment, length) in enumerate(zip(self.segments, self._lengths)):
            rows = self._flat_rows(segment, length)
            if i == 0:
                rows = rows[first.offset + first.skip * bs:]
            while rows.numel():
                take, rows = rows[: bs - held], rows[bs - held:]
                pieces.append((segment, take))
                held += take.numel()
                if held == bs:
                    yield self._mixed_batch(pieces)
                    pieces, held = [], 0
        if pieces:
            yield self._mixed_batch(pieces)

    def _mixed_batch(self, pieces: list[tuple[Segment, torch.Tensor]]) -> Batch:
        base = torch.cat([segment.idx.index_select(0, rows) for segment, rows in pieces])
        t = torch.cat([segment.task_ids.index_select(0, rows) for segment, rows in pieces])
        mine = slice(self.rank, None, self.world_size)
        return self._batch(base[mine], t[mine], base.numel())


def single_task(task_ids: torch.Tensor) -> Optional[int]:
    """The task id when every row has the same one, else None (one device sync per segment, not per batch)."""
    if task_ids.numel() == 0:
        return None
    first = task_ids[0]
    return int(first) if bool((task_ids == first).all()) else None


MATERIALISE_CHUNK = 4096  # rows transformed per call: the chunk's temporaries stay small next to the result
# Passes over a segment (rows drawn / rows held) from which transforming it once pays. On a CPU a 128-row batch
# is transformed inside the cache while a whole phase goes through memory: `scripts/bench_transforms.py` on the
# 2-core machine (loaded, 1 thread) measured a 60,000-row MNIST phase at ~1.4 per-batch passes to materialise and
# ~0.5 of one per pass to slice, so it pays from ~3 passes. On a GPU a per-batch transform is several kernel
# launches every step and a whole phase is one pass over device memory: it pays from the first pass.
MIN_PASSES = {"cpu": 3}


def materialise(stream: Stream, idx: torch.Tensor, task_ids: torch.Tensor, task: Optional[int],
                budget_bytes: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) of every row of a segment, transformed chunk by chunk into one preallocated tensor each;
    None when they would take more than `budget_bytes`. Row i is exactly what train_batch gives for row i."""
    n = idx.numel()
    first = min(n, MATERIALISE_CHUNK)
    x0, y0 = stream.train_batch(idx[:first], task_ids[:first], task)
    per_row = x0[0].numel() * x0.element_size() + y0[0].numel() * y0.element_size()
    if n * per_row > budget_bytes:
        return None
    x_all = torch.empty((n, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)
    y_all = torch.empty((n, *y0.shape[1:]), dtype=y0.dtype, device=y0.device)
    x_all[:first], y_all[:first] = x0, y0
    del x0, y0
    for start in range(first, n, MATERIALISE_CHUNK):
        end = min(n, start + MATERIALISE_CHUNK)
        x_all[start:end], y_all[start:end] = stream.train_batch(idx[start:end], task_ids[start:end], task)
    return x_all, y_all


def eval_batches(stream: Stream, task_id: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 split: str = "test"):
    """(x, y) batches of one task's test split (or its validation split, carved from the training arrays);
    under DDP each rank takes an interleaved share (no duplicates)."""
    task = stream.tasks[task_id]
    idx, arrays = (task.val_idx, stream.train) if split == "val" else (task.test_idx, stream.test)
    idx = idx[rank::world_size]
    for start in range(0, idx.numel(), batch_size):
        base = idx[start:start + batch_size]
        images, labels = arrays.images.index_select(0, base), arrays.labels.index_select(0, base)  # = [base], faster
        yield stream.transform.for_task(images, task_id), labels
