"""Experience replay: a reservoir of past samples mixed into every training batch, for any learner."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from cltrain.config import count
from cltrain.buffers import ReservoirBuffer
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext
from cltrain.seeding import derive_seed
from cltrain.distributed import gather_rows, rank_rows, ranks_agree
from cltrain.streams.loader import Batch


@dataclass
class ReplayConfig:
    capacity: int = count(1000)  # samples kept, over the whole run
    batch_size: Optional[int] = count(None, high=1 << 20)  # replayed samples per step; None: the training batch size


@PLUGINS.register("replay")
class Replay(Plugin):
    """Before a step: append a replay batch drawn from the reservoir. After it: offer the new rows to it.

    Under DDP every rank adds the same global batch (gathered from all ranks) and draws with the same
    generator, so the buffers stay identical without any broadcast.
    """

    Config = ReplayConfig
    name = "replay"

    def __init__(self, cfg: ReplayConfig, ctx: PluginContext):
        super().__init__(cfg, ctx)
        self.buffer = ReservoirBuffer(cfg.capacity, seed=derive_seed(ctx.seed, "replay_buffer"))
        self.ranks_agree: Optional[bool] = None  # set under DDP: are the buffers identical on all ranks?

    def on_train_start(self, trainer, pl_module) -> None:
        self.buffer.to(pl_module.device)  # once per fit: restored contents arrive on the CPU

    def on_train_batch_start(self, trainer, pl_module, batch: Batch, batch_idx: int) -> None:
        if len(self.buffer) == 0:
            return
        n = self.cfg.batch_size or self.ctx.batch_size
        x, y, t = self.buffer.sample(n)
        if trainer.world_size > 1:  # DDP: this rank's share; one process keeps the draw (no second copy of it)
            rows = rank_rows(n, trainer, x.device)
            x, y, t = x[rows], y[rows], t[rows]
        batch.extend(x, y, t)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Batch, batch_idx: int) -> None:
        new = slice(0, batch.n_new)
        t = batch.t[new] if batch.t is not None else None
        x, y, t = gather_rows(trainer, batch.x[new], batch.y[new], t, batch.n_global)
        self.buffer.add(x, y, t)

    def on_train_end(self, trainer, pl_module) -> None:
        """Check (once per fit, not per step) that every DDP rank holds the same buffer."""
        if trainer.world_size > 1:
            self.ranks_agree = ranks_agree([self.buffer.digest()], pl_module.device)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])

    def final_metrics(self, ctx) -> dict[str, Any]:
        return {"replay_buffer_size": len(self.buffer), "replay_seen": self.buffer.seen,
                "replay_buffer_digest": self.buffer.digest(), "replay_ranks_agree": self.ranks_agree}
