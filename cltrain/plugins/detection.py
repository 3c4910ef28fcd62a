"""Loss-shift detection: pure detectors, and a plugin that watches any learner's training loss.

A detector is fed one scalar loss per training batch and says whether the distribution just shifted. Two
are provided, picked by `plugins.detection.method` (or TAME's `learner.detector`):

- `ema_window` (TAME's rule): an exponential moving average s <- a*loss + (1-a)*s is compared with
  mean + k*max(std, floor) of a window of recent raw losses; the window starts as [init] (ln C for a fresh
  C-way classifier). Only losses judged in-distribution enter the window and the average, so after a shift
  the threshold stays frozen at its pre-shift value (TAME compares returning experts against it).
- `welch`: Welch's unequal-variance t-test of a short window of recent losses against a longer reference
  window (one-sided: recent mean greater), declared at a significance level.

The `detection` plugin runs a detector over outputs["loss"] of any learner's training_step. It never feeds
back into training (it only reports), so it buffers losses on the device and reads them back every
`flush_every` batches: no host sync per step. At the end it scores the detections against the true
boundaries (FinalContext.phase_end_steps) and plots the loss trace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cltrain.config import bad, bounded, choice, count, fraction
from cltrain.distributed import all_sum, ranks_agree, world_size
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext
from cltrain.registry import Registry


# ---- pure detectors -------------------------------------------------------------------------------------
class Window:
    """A fixed-size ring of recent floats; statistics come from numpy on at most `size` values per call."""

    def __init__(self, size: int):
        self.values = np.zeros(size, dtype=np.float64)
        self.count = 0  # values ever pushed (the ring holds the last min(count, size))

    def push(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def clear(self) -> None:
        self.count = 0

    def view(self) -> np.ndarray:
        return self.values[: min(self.count, len(self.values))]

    def last(self, n: int) -> np.ndarray:
        """The n most recent values, oldest first."""
        n = min(n, self.count, len(self.values))
        idx = (np.arange(self.count - n, self.count)) % len(self.values)
        return self.values[idx]

    def state_dict(self) -> dict:
        return {"values": self.values.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.values, self.count = state["values"].copy(), int(state["count"])


class Detector:
    """Interface: `fires(loss)` judges a new loss without changing state; `observe(loss)` accepts it as
    in-distribution; `accepts(loss)` asks whether a dormant (frozen) detector would take this loss as its own
    distribution (TAME's recurring-task test); `reset(init)` starts over."""

    def fires(self, loss: float) -> bool:
        raise NotImplementedError

    def observe(self, loss: float) -> None:
        raise NotImplementedError

    def accepts(self, loss: float) -> bool:
        return not self.fires(loss)

    def reset(self, init: Optional[float]) -> None:
        raise NotImplementedError

    def rebase(self, delta: float) -> None:
        """The judged network changed (e.g. it was pruned) and its loss level moved by delta: move the reference."""
        raise NotImplementedError

    def update(self, loss: float) -> bool:
        """Judge and, when in-distribution, absorb the loss. True: a shift was declared (state unchanged)."""
        if self.fires(loss):
            return True
        self.observe(loss)
        return False

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class EMAWindowDetector(Detector):
    def __init__(self, window: int = 100, alpha: float = 0.2, k: float = 3.0, std_floor: float = 0.005,
                 init: Optional[float] = None, min_window: int = 1):
        self.alpha, self.k, self.std_floor, self.min_window = alpha, k, std_floor, min_window
        self.window = Window(window)
        self.ema: Optional[float] = None
        self.reset(init)

    def reset(self, init: Optional[float]) -> None:
        self.window.clear()
        self.ema = None
        if init is not None:
            self.window.push(init)

    def threshold(self) -> float:
        values = self.window.view()
        if values.size < max(self.min_window, 1):
            return math.inf  # too little evidence yet (min_window > 1: a refractory period after a reset)
        return float(values.mean() + self.k * max(float(values.std()), self.std_floor))

    def smoothed(self, loss: float) -> float:
        """The average if `loss` were absorbed; the first loss seeds it (as in the reference code)."""
        return loss if self.ema is None else self.alpha * loss + (1 - self.alpha) * self.ema

    def fires(self, loss: float) -> bool:
        if self.ema is None:
            return False  # it has absorbed nothing yet: there is no distribution to shift away from
        return self.smoothed(loss) > self.threshold()

    def observe(self, loss: float) -> None:
        self.ema = self.smoothed(loss)
        self.window.push(loss)

    def rebase(self, delta: float) -> None:
        n = min(self.window.count, len(self.window.values))
        self.window.values[:n] += delta
        if self.ema is not None:
            self.ema += delta

    def state_dict(self) -> dict:
        return {"window": self.window.state_dict(), "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.window.load_state_dict(state["window"])
        self.ema = state["ema"]


class WelchDetector(Detector):
    """Welch's t-test, recent window vs reference window, one-sided (the loss went up)."""

    def __init__(self, window: int = 100, recent: int = 10, significance: float = 1e-4, min_reference: int = 20,
                 init: Optional[float] = None):
        self.reference = Window(window)
        self.recent = Window(recent)
        self.significance, self.min_reference = significance, min_reference

    def reset(self, init: Optional[float]) -> None:
        self.reference.clear()
        self.recent.clear()

    def _p_value(self, recent: np.ndarray) -> float:
        from scipy.stats import ttest_ind

        reference = self.reference.view()
        if reference.size < self.min_reference or recent.size < 2:
            return 1.0
        result = ttest_ind(recent, reference, equal_var=False, alternative="greater")
        return 1.0 if np.isnan(result.pvalue) else float(result.pvalue)

    def fires(self, loss: float) -> bool:
        recent = np.append(self.recent.last(self.recent.values.size - 1), loss)
        return self._p_value(recent) < self.significance

    def accepts(self, loss: float) -> bool:
        # A dormant detector gets one loss: a z-test of it against the reference at the same level.
        from scipy.stats import norm

        reference = self.reference.view()
        if reference.size < 2:
            return False
        z = (loss - reference.mean()) / max(float(reference.std()), 1e-3)
        return float(norm.sf(z)) >= self.significance

    def observe(self, loss: float) -> None:
        # A loss leaves `recent` into the reference, so the two windows never overlap.
        if self.recent.count >= self.recent.values.size:
            self.reference.push(float(self.recent.last(self.recent.values.size)[0]))
        self.recent.push(loss)

    def rebase(self, delta: float) -> None:
        for w in (self.reference, self.recent):
            w.values[: min(w.count, len(w.values))] += delta

    def state_dict(self) -> dict:
        return {"reference": self.reference.state_dict(), "recent": self.recent.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.reference.load_state_dict(state["reference"])
        self.recent.load_state_dict(state["recent"])


@dataclass
class DetectorConfig:
    method: str = choice("ema_window", "ema_window", "welch")
    window: int = count(100, high=1_000_000)  # losses in the window (ema_window) / reference window (welch)
    alpha: float = fraction(0.2, low_open=True)  # ema_window: smoothing factor
    k: float = bounded(3.0, 0, 1000)  # ema_window: threshold = mean + k * std
    std_floor: float = bounded(0.005, 0, 1e6)  # ema_window: the std never counts as smaller than this
    recent: int = count(10, high=1_000_000)  # welch: recent losses tested against the reference
    significance: float = fraction(1e-4, low_open=True, high_open=True)  # welch: a shift when p < significance
    # ema_window: no alarm before the window holds this many losses (1: TAME's rule)
    min_window: int = count(1, high=1_000_000)

    def validate(self, where: str, exp: Any) -> None:
        check_can_fire(self.method, self.window, self.min_window, self.recent, where)


def check_can_fire(method: str, window: int, min_window: int, recent: int, where: str) -> None:
    """Refuse detector settings under which no shift can ever be declared (a silent no-op otherwise)."""
    if method == "ema_window" and min_window > window:
        raise bad(f"{where}min_window", min_window, f"<= {where}window ({window}): the window never holds more")
    if method == "welch" and window < 20:  # WelchDetector's min_reference: fewer reference losses never test
        raise bad(f"{where}window", window, "welch needs a reference window of >= 20 losses")
    if method == "welch" and recent < 2:
        raise bad(f"{where}recent", recent, "welch needs >= 2 recent losses for a t-test")


DETECTORS: Registry[Any] = Registry("detector", "detector.method")
DETECTORS.register("ema_window")(
    lambda c, init: EMAWindowDetector(c.window, c.alpha, c.k, c.std_floor, init, c.min_window))
DETECTORS.register("welch")(
    lambda c, init: WelchDetector(c.window, c.recent, c.significance, init=init))


def build_detector(cfg: DetectorConfig, init: Optional[float] = None) -> Detector:
    return DETECTORS.get(cfg.method)(cfg, init)


# ---- scoring against the truth --------------------------------------------------------------------------
def true_shifts(phase_end_steps: list[int], order: list[int]) -> list[int]:
    """Global batch index of the first batch of each phase whose task differs from the previous one."""
    return [phase_end_steps[k] for k in range(len(order) - 1) if order[k + 1] != order[k]]


def score_detections(events: list[int], shifts: list[int], end: int) -> dict[str, Any]:
    """Match each true shift with the first detection at or after it and before the next shift.

    Everything else is a false detection (a second alarm in a task, or an alarm before any shift).
    """
    events = sorted(events)
    bounds = shifts + [end]
    delays, matched = [], set()
    for b, nxt in zip(shifts, bounds[1:]):
        hit = next((e for e in events if b <= e < nxt), None)
        if hit is not None:
            delays.append(hit - b)
            matched.add(hit)
    return {
        "detection_delays": delays,
        "detection_mean_delay": float(np.mean(delays)) if delays else None,
        "detection_missed": len(shifts) - len(delays),
        "detection_false": len([e for e in events if e not in matched]),
        "detection_events": events,
        "true_shifts": shifts,
    }


def never_fired(who: str, events: list[int], shifts: list[int], phase_end_steps: list[int],
                cfg: DetectorConfig) -> Optional[str]:
    """A warning when the stream changes task but the detector never fired (None otherwise), with the numbers
    that usually explain it: tasks shorter than the window, or a threshold (k, floor) the shifts never cross."""
    if events or not shifts:
        return None
    lengths = np.diff([0, *phase_end_steps])
    return (f"{who} never detected a shift: {len(shifts)} true task change(s) in {int(lengths.sum())} batches, "
            f"shortest phase {int(lengths.min())} batches; detector {cfg.method} with window={cfg.window}, "
            f"k={cfg.k}, std_floor={cfg.std_floor}, min_window={cfg.min_window}. One network learned every task: "
            "lengthen the tasks or shorten the window")


def plot_loss_trace(losses: np.ndarray, events: list[int], shifts: list[int], path: Path, title: str,
                    smoothed: Optional[np.ndarray] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(losses, lw=0.6, color="0.55", label="training loss")
    if smoothed is not None:
        ax.plot(smoothed, lw=1.0, color="tab:blue", label="smoothed")
    for i, b in enumerate(shifts):
        ax.axvline(b, color="tab:green", ls="--", lw=1.2, label="true boundary" if i == 0 else None)
    for i, e in enumerate(events):
        ax.axvline(e, color="tab:red", lw=0.9, alpha=0.8, label="detected shift" if i == 0 else None)
    ax.set_xlabel("global batch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the plugin -----------------------------------------------------------------------------------------
@dataclass
class DetectionPluginConfig(DetectorConfig):
    # one network keeps training through a shift: let its new loss level settle first
    min_window: int = count(20, high=1_000_000)
    # own: run the detector above on the loss; learner: record the learner's own decisions (outputs["shift"],
    # e.g. TAME's), so any detecting learner gets the same delay/miss/false-alarm scoring and plot
    source: str = choice("own", "own", "learner")
    init_loss: Optional[float] = bounded(None, 0, 1e6)  # the window's first value; None: the first loss seen
    flush_every: int = count(50, high=1_000_000)  # losses are read back from the device this many batches at a time
    plot: bool = True  # write detection.png into the run folder


@PLUGINS.register("detection")
class Detection(Plugin):
    """Runs a detector over the training loss of any learner; reports events, delays, misses, false alarms.

    After an alarm the detector restarts from the alarming loss (the learner keeps training one network,
    so the new task's loss level becomes the reference). Under DDP it watches the global batch's loss (the
    ranks' losses weighted by their rows, one tiny all-reduce per step that stays on the device), so every
    rank raises the same alarms.
    """

    Config = DetectionPluginConfig
    learner_needs = {("source", "learner"): "reports_shifts"}  # else it would record no events at all
    name = "detection"

    def __init__(self, cfg: DetectionPluginConfig, ctx: PluginContext):
        super().__init__(cfg, ctx)
        self.detector = build_detector(cfg, cfg.init_loss)
        self.losses: list[float] = []  # every batch's loss, host side (one float per batch)
        self.events: list[int] = []
        self._pending: list[torch.Tensor] = []  # device scalars not yet read back

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if self.cfg.source == "learner" and isinstance(outputs, dict) and bool(outputs.get("shift", False)):
            self.events.append(len(self.losses) + len(self._pending))
        loss = loss.detach().float().reshape(())
        if world_size() > 1:
            rows = float(len(batch))
            total = all_sum(torch.stack([loss * rows, loss.new_tensor(rows)]))
            loss = total[0] / total[1]
        self._pending.append(loss)
        if len(self._pending) >= self.cfg.flush_every:
            self.flush()

    def on_train_end(self, trainer, pl_module) -> None:
        self.flush()

    def flush(self) -> None:
        """Read back the buffered losses in one transfer and run the detector over them in order."""
        if not self._pending:
            return
        values = torch.stack(self._pending).cpu().tolist()
        self._pending = []
        for loss in values:
            index = len(self.losses)
            self.losses.append(loss)
            if self.cfg.source == "own" and self.detector.update(loss):
                self.events.append(index)
                self.detector.reset(None)
                self.detector.observe(loss)

    def state_dict(self) -> dict[str, Any]:
        self.flush()  # checkpoints are written at phase ends: everything seen so far is judged
        return {"detector": self.detector.state_dict(), "losses": list(self.losses), "events": list(self.events)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.detector.load_state_dict(state["detector"])
        self.losses, self.events = list(state["losses"]), list(state["events"])

    def final_metrics(self, ctx) -> dict[str, Any]:
        self.flush()
        shifts = true_shifts(ctx.shift_steps(), ctx.stream.order)
        out = score_detections(self.events, shifts, len(self.losses))
        # source=learner: the learner's own detector missed, and the learner reports that with its own numbers
        warning = self.cfg.source == "own" and never_fired("the detection plugin", self.events, shifts,
                                                           ctx.phase_end_steps, self.cfg)
        if warning:
            out["warnings"] = [warning]
        if ctx.world_size > 1:
            mine = [float(len(self.events)), float(sum(self.events)), float(sum(self.losses))]
            out["detection_ranks_agree"] = ranks_agree(mine, ctx.device)
        if self.cfg.plot and self.ctx.run_dir:
            path = Path(self.ctx.run_dir) / "detection.png"
            what = self.cfg.method if self.cfg.source == "own" else "the learner's own detector"
            plot_loss_trace(np.asarray(self.losses), self.events, shifts, path,
                            f"shift detection ({what}) on the training loss")
            out["detection_plot"] = str(path)
        return out
