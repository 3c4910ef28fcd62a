"""Up-front checks of the trainer's hardware settings, so Lightning never refuses them after the run folder
exists. torch is imported only when the answer depends on the machine (GPUs asked for)."""
from __future__ import annotations

import re
from typing import Any

from cltrain.errors import ConfigError

DEVICES_HELP = "a number >= 1 (-1: all GPUs), 'auto', a list of GPU indices or '0,1'"


def check_devices(t: Any, where: str = "trainer.") -> None:
    """`t` is a TrainerConfig; raises ConfigError naming the key and what is valid."""
    indices = _device_indices(t.devices, where)
    wants_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and _cuda_count() > 0)
    if wants_gpu:
        _check_gpus(t, indices, where)
    elif t.accelerator == "mps":
        _check_mps(t, where)
    elif not (isinstance(t.devices, int) and t.devices >= 1) and str(t.devices).strip() not in ("auto",) \
            and not str(t.devices).strip().isdigit():
        raise ConfigError(f"bad value {t.devices!r} for '{where}devices' with {where}accelerator={t.accelerator!r} "
                          f"(no GPU); valid: a number of CPU processes >= 1, or 'auto'")
    if not wants_gpu and t.accelerator != "mps" and str(t.precision) in ("16-mixed", "16"):
        # Lightning would train in bf16-mixed instead, with a warning: a different computation than asked for.
        raise ConfigError(f"bad value {t.precision!r} for '{where}precision' on the CPU (fp16 autocast needs a GPU; "
                          f"Lightning would silently use bf16-mixed); valid on CPU: 32-true, 64-true, bf16-mixed, "
                          f"bf16-true, 16-true")
    if t.strategy == "single_device" and (t.several_processes or str(t.devices).strip() == "auto"):
        raise ConfigError(f"{where}strategy='single_device' runs one process; {where}devices={t.devices!r} "
                          f"{where}num_nodes={t.num_nodes} ask for more (valid: devices=1 and num_nodes=1, "
                          f"or another strategy)")


def _device_indices(devices: Any, where: str) -> list[int] | None:
    """The explicit GPU indices asked for, None for a count or 'auto'; refuses anything else."""
    if isinstance(devices, bool):
        raise ConfigError(f"bad value {devices!r} for '{where}devices'; valid: {DEVICES_HELP}")
    if isinstance(devices, int):
        if devices == 0 or devices < -1 or devices > 4096:
            raise ConfigError(f"bad value {devices!r} for '{where}devices'; valid: {DEVICES_HELP}")
        return None
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 4096 for d in devices) \
                or len(set(devices)) != len(devices):
            raise ConfigError(f"bad value {devices!r} for '{where}devices'; valid: {DEVICES_HELP}")
        return list(devices)
    text = str(devices).strip()
    if text == "auto":
        return None
    if re.fullmatch(r"-1|[1-9]\d{0,3}", text):
        return None
    if re.fullmatch(r"\d{1,4}(,\d{1,4})*,?", text) and "," in text:
        return [int(p) for p in text.split(",") if p]
    raise ConfigError(f"bad value {devices!r} for '{where}devices'; valid: {DEVICES_HELP}")


def _cuda_count() -> int:
    import torch  # only here: knowing the GPUs needs torch (~2 s), nothing else in resolving does

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_gpus(t: Any, indices: list[int] | None, where: str) -> None:
    available = _cuda_count()
    if available == 0:
        raise ConfigError(f"{where}accelerator={t.accelerator!r} but no CUDA GPU is visible on this machine; "
                          f"valid here: cpu (or auto)")
    wanted = indices if indices is not None else []
    if indices is None and str(t.devices).strip() not in ("auto", "-1"):
        wanted = list(range(int(str(t.devices).strip())))
    if wanted and max(wanted) >= available:
        raise ConfigError(f"bad value {t.devices!r} for '{where}devices': this machine has {available} GPU(s); "
                          f"valid: at most {available} devices, indices 0..{available - 1}")


def _check_mps(t: Any, where: str) -> None:
    import torch

    if not torch.backends.mps.is_available():
        raise ConfigError(f"{where}accelerator='mps' but Apple's MPS is not available on this machine; "
                          f"valid here: cpu (or auto)")
    if str(t.devices).strip() not in ("1", "auto", "-1"):
        raise ConfigError(f"bad value {t.devices!r} for '{where}devices' with mps; valid: 1")
