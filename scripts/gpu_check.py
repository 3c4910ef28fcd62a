"""Checks of cltrain's CUDA path, for a machine with one GPU (about 4 minutes on an H100/H200).

    CLTRAIN_DATA=<data root> python scripts/gpu_check.py [--out DIR] [--only NAME,...] [--jobs 4]
    python scripts/gpu_check.py --accelerator cpu --tiny      # the same checks on the CPU, smaller (a dry run)

Every check runs `cltrain fit` (or `cltrain merge`) in a subprocess with the collective check on
(`CLTRAIN_CHECK_COLLECTIVES=1`: a collective issued outside cltrain/distributed.py, or with a tensor off the
process group's device, fails the fit) and asserts what its name says:

- every learner family trains on the GPU and reaches a sane accuracy (finetune, EWC offline/online, SI, replay,
  joint, the power-law schedule, TAME, IBCL, L2M's pool on a frozen MLP, the merge learner + `cltrain merge`);
- `strategy=ddp` with one process initialises NCCL, so every collective the learner issues must hand CUDA
  tensors (NCCL refuses CPU ones), and it trains as the single-device run does;
- a run SIGKILLed after its first phase and resumed on the GPU ends with the uninterrupted run's metrics, in
  fp32 and in 16-mixed (whose grad-scaler state is checkpointed);
- the GPU's accuracy agrees with the CPU's on the same run (not bit-equal: other kernels).

Writes DIR/gpu_check.json (one record per check: ok, seconds, what was compared) and DIR/gpu_check.log (the
output of failed runs). Exit 1 when a check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["trainer.progress_bar=false", "logger.wandb.mode=disabled", "logger.csv=false"]


@dataclass
class Ctx:
    accelerator: str
    root: Path
    tiny: bool
    log: list[str] = field(default_factory=list)

    def scale(self, gpu: list[str], tiny: list[str]) -> list[str]:
        return tiny if self.tiny else gpu


def cli(ctx: Ctx, *args: str, accelerator: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLTRAIN_CHECK_COLLECTIVES": "1", "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "cltrain.cli", *args]
    if args[0] == "fit":
        cmd += [f"trainer.accelerator={accelerator or ctx.accelerator}", *QUIET]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        ctx.log.append(f"$ {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def fit(ctx: Ctx, name: str, experiment: str, *overrides: str, accelerator: str | None = None) -> dict:
    """A finished run's metrics.json (or {'rc': code} when it failed)."""
    run_dir = ctx.root / name
    proc = cli(ctx, "fit", experiment, f"run_dir={run_dir}", "seed=0", *overrides, accelerator=accelerator)
    if proc.returncode != 0:
        return {"rc": proc.returncode}
    return json.loads((run_dir / "metrics.json").read_text())


def killed_and_resumed(ctx: Ctx, name: str, experiment: str, *overrides: str) -> dict:
    """SIGKILL `cltrain fit` once phase 1 is checkpointed, then resume it; the resumed run's metrics."""
    run_dir = ctx.root / name
    env = {**os.environ, "CLTRAIN_CHECK_COLLECTIVES": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "cltrain.cli", "fit", experiment, f"run_dir={run_dir}", "seed=0",
            f"trainer.accelerator={ctx.accelerator}", *QUIET, *overrides]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "phase 1/" in line:  # printed once phase 1's checkpoint is on disk
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if (run_dir / "metrics.json").exists():
        return {"rc": "finished before the kill: the check proves nothing (make the run longer)"}
    return fit(ctx, name, experiment, *overrides, "resume=true")


def acc(metrics: dict) -> float:
    return metrics.get("acc", float("nan")) if "rc" not in metrics else float("nan")


def sane(metrics: dict, floor: float) -> tuple[bool, str]:
    value = acc(metrics)
    ok = math.isfinite(value) and value >= floor
    return ok, f"acc {value:.4f} (floor {floor})" if "rc" not in metrics else f"run failed: {metrics['rc']}"


# ---- the checks: each returns (ok, what was compared) ----------------------------------------------------------

SMALL_PMNIST = ["stream.n_tasks=3", "stream.train_per_task=6000", "stream.test_per_task=2000"]
TINY_PMNIST = ["stream.n_tasks=3", "stream.train_per_task=600", "stream.test_per_task=300"]


def pmnist(ctx: Ctx) -> list[str]:
    return ctx.scale(SMALL_PMNIST, TINY_PMNIST)


def floor(ctx: Ctx, value: float) -> float:
    return 0.3 if ctx.tiny else value  # tiny CPU runs only have to finish with a finite accuracy above chance


def check_learner(ctx: Ctx, name: str, experiment: str, low: float, *extra: str) -> tuple[bool, str]:
    return sane(fit(ctx, name, experiment, *extra), floor(ctx, low))


LEARNERS = {  # check name -> (experiment, accuracy floor, overrides beyond the stream's size)
    "finetune": ("bench/pmnist_naive", 0.70, []),
    "ewc": ("bench/pmnist_ewc", 0.70, []),
    "ewc_online": ("bench/pmnist_ewc_online", 0.70, []),
    "si": ("bench/pmnist_si", 0.70, []),
    "replay": ("bench/pmnist_replay", 0.70, []),
    "joint": ("bench/pmnist_joint", 0.80, []),
    "powerlaw": ("powerlaw/pmnist", 0.70, ["trainer.steps_per_task=200"]),
}


def learner_check(key: str):
    experiment, low, extra = LEARNERS[key]
    return lambda ctx: check_learner(ctx, key, experiment, low, *pmnist(ctx), *extra)


def check_tame(ctx: Ctx) -> tuple[bool, str]:
    size = ctx.scale(["stream.n_tasks=2"], ["stream.n_tasks=2", "stream.train_per_task=1000",
                                            "stream.test_per_task=300"])
    return sane(fit(ctx, "tame", "tame/split_mnist", *size), floor(ctx, 0.85))


def check_ibcl(ctx: Ctx) -> tuple[bool, str]:
    size = ctx.scale(["stream.n_tasks=3"], ["stream.n_tasks=2", "learner.n_samples=2"])
    return sane(fit(ctx, "ibcl", "ibcl/mnist_pairs", *size), floor(ctx, 0.80))


def check_l2m(ctx: Ctx) -> tuple[bool, str]:
    size = ctx.scale([], ["stream.train_per_task=1000", "stream.test_per_task=300"])
    pre = fit(ctx, "l2m_pretrain", "l2m/pmnist_pretrain", *size)
    if "rc" in pre:
        return False, f"pre-training failed: {pre['rc']}"
    ckpt = ctx.root / "l2m_pretrain" / "checkpoints" / "last.pt"
    run = fit(ctx, "l2m", "l2m/pmnist", "stream.n_tasks=2", "trainer.epochs_per_task=1",
              f"model.options.pretrained={ckpt}", *size)
    return sane(run, 0.2)  # the frozen-MLP pool is weak at any scale (docs/results/l2m.md); this checks it runs


def check_merge(ctx: Ctx) -> tuple[bool, str]:
    size = ctx.scale(["stream.n_tasks=2"], ["stream.n_tasks=2", "stream.train_per_task=400"])
    run = fit(ctx, "merge", "merging/split_mnist_merge", *size)
    ok, what = sane(run, floor(ctx, 0.85))
    if not ok:
        return ok, what
    out = ctx.root / "merge" / "merged_ties"
    proc = cli(ctx, "merge", str(ctx.root / "merge"), "method=ties", f"out={out}")
    if proc.returncode != 0:
        return False, f"cltrain merge failed (rc {proc.returncode})"
    merged = json.loads((out / "merge.json").read_text())
    return True, f"{what}; cltrain merge ties: {json.dumps({k: merged[k] for k in list(merged)[:4]})[:300]}"


def check_ddp(ctx: Ctx, key: str, experiment: str, *extra: str) -> tuple[bool, str]:
    """One-process DDP: on CUDA the process group is NCCL, which refuses a CPU tensor in any collective."""
    single = fit(ctx, f"ddp_ref_{key}", experiment, *extra)
    ddp = fit(ctx, f"ddp_{key}", experiment, *extra, "trainer.strategy=ddp", "trainer.devices=1")
    if "rc" in ddp or "rc" in single:
        return False, f"run failed: ddp {ddp.get('rc', 0)}, single {single.get('rc', 0)}"
    diff = abs(acc(ddp) - acc(single))
    return diff < 0.02, f"acc ddp {acc(ddp):.4f} vs single device {acc(single):.4f} (|diff| {diff:.2e} < 0.02)"


def ddp_check(key: str, experiment: str, extra: list[str]):
    return lambda ctx: check_ddp(ctx, key, experiment, *(pmnist(ctx) if "pmnist" in experiment else []), *extra)


def check_resume(ctx: Ctx, key: str, *extra: str) -> tuple[bool, str]:
    whole = fit(ctx, f"whole_{key}", "bench/pmnist_ewc", *pmnist(ctx), *extra)
    resumed = killed_and_resumed(ctx, f"resumed_{key}", "bench/pmnist_ewc", *pmnist(ctx), *extra)
    if "rc" in whole or "rc" in resumed:
        return False, f"run failed: whole {whole.get('rc', 0)}, resumed {resumed.get('rc', 0)}"
    same = whole["acc_matrix"] == resumed["acc_matrix"]
    gap = max(abs(a - b) for ra, rb in zip(whole["acc_matrix"], resumed["acc_matrix"]) for a, b in zip(ra, rb))
    return same, f"acc_matrix identical: {same} (max |diff| {gap:.2e})"


def check_cpu_agrees(ctx: Ctx) -> tuple[bool, str]:
    gpu = fit(ctx, "agree_gpu", "bench/pmnist_naive", *pmnist(ctx))
    cpu = fit(ctx, "agree_cpu", "bench/pmnist_naive", *pmnist(ctx), accelerator="cpu")
    if "rc" in gpu or "rc" in cpu:
        return False, f"run failed: {gpu.get('rc', 0)}, {cpu.get('rc', 0)}"
    diff = abs(acc(gpu) - acc(cpu))
    return diff < 0.03, f"acc {ctx.accelerator} {acc(gpu):.4f} vs cpu {acc(cpu):.4f} (|diff| {diff:.4f} < 0.03)"


def checks() -> dict:
    table = {f"learner_{k}": learner_check(k) for k in LEARNERS}
    table.update({
        "learner_tame": check_tame, "learner_ibcl": check_ibcl, "learner_l2m_pool": check_l2m,
        "learner_merge_and_cli": check_merge,
        "ddp1_finetune": ddp_check("finetune", "bench/pmnist_naive", []),
        "ddp1_ewc": ddp_check("ewc", "bench/pmnist_ewc", []),
        "ddp1_si": ddp_check("si", "bench/pmnist_si", []),
        "ddp1_replay": ddp_check("replay", "bench/pmnist_replay", []),
        "ddp1_tame": ddp_check("tame", "tame/split_mnist", ["stream.n_tasks=2"]),
        "ddp1_merge": ddp_check("merge", "merging/split_mnist_merge", ["stream.n_tasks=2"]),
        "resume_fp32": lambda ctx: check_resume(ctx, "fp32"),
        "agrees_with_cpu": check_cpu_agrees,
        "l2m_pool_on_decision_transformer": check_pool_on_device,
    })
    return table


def check_pool_on_device(ctx: Ctx) -> tuple[bool, str]:
    """L2M's pool on a small decision transformer, in this process on the device (the Meta-World runs need the rl
    extra, which this check does not assume): training moves only the modulators, and the batched per-sample
    LoRA equals a loop over samples there."""
    import torch

    from cltrain.config import OptimConfig
    from cltrain.learners.l2m import L2M, L2MConfig
    from cltrain.nn.dt import DecisionTransformer
    from cltrain.nn.modulators import PoolLoRA, Selection
    from cltrain.streams.loader import Batch

    dev = torch.device("cuda" if ctx.accelerator in ("gpu", "cuda") else "cpu")
    torch.manual_seed(0)
    dt = DecisionTransformer(3, 6, 2, 8, width=16, layers=2, heads=2)
    learner = L2M(dt, OptimConfig(name="adam", lr=0.05), L2MConfig(pool_size=4)).to(dev)
    gen = torch.Generator().manual_seed(0)
    acts = torch.randint(0, 8, (32, 3, 2), generator=gen)
    x = torch.cat([torch.randn(32, 3, 6, generator=gen), torch.rand(32, 3, 1, generator=gen), torch.ones(32, 3, 1),
                   acts.float()], -1).to(dev)
    before = {k: v.clone() for k, v in learner.model.state_dict().items() if "modulator" not in k}
    opt = learner.configure_optimizers()
    opt = opt[0] if isinstance(opt, (list, tuple)) else opt
    losses = []
    for _ in range(20):
        loss = learner.loss(learner.logits(x, None), Batch(x, acts.to(dev), None, 32))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    frozen = all(torch.equal(before[k], v) for k, v in learner.model.state_dict().items() if k in before)
    sel = Selection()
    lora = PoolLoRA(16, 24, pool=5, rank=4, alpha=8.0, selection=sel).to(dev)
    torch.nn.init.normal_(lora.B)
    xs, ys = torch.randn(7, 3, 16, device=dev), torch.randn(7, 3, 24, device=dev)
    sel.idx = torch.tensor([0, 4, 4, 2, 1, 0, 3], device=dev)
    loop = torch.stack([ys[i] + xs[i] @ lora.A[e] @ lora.B[e] * 2.0 for i, e in enumerate(sel.idx.tolist())])
    batched_ok = torch.allclose(lora(xs, ys), loop, atol=1e-4)
    ok = frozen and batched_ok and losses[-1] < losses[0]
    return ok, (f"on {dev}: backbone bit-identical {frozen}, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                f"batched LoRA == per-sample loop {batched_ok}")


# The datasets each check reads from the data root (every check not named here: MNIST).
DATASETS_OF = {"l2m_pool_on_decision_transformer": ()}
# IBCL feeds MNIST through a feature extractor trained on Fashion-MNIST (cltrain/streams/features.py); the features
# are cached after a first run, and without that cache its check reads Fashion-MNIST too.
EXTRACTED = {"learner_ibcl": "mnist"}


def missing_datasets(names: list[str]) -> list[str]:
    """For each dataset the chosen checks need and the data root lacks: where it was looked for and which checks
    read it. A machine without one would otherwise start every check and fail those one by one."""
    from cltrain.config import DataConfig, data_root
    from cltrain.errors import DataMissingError
    from cltrain.streams.datasets import DATASETS, load_split
    from cltrain.streams.features import extractor_needed

    root = data_root(DataConfig())
    readers: dict[str, list[str]] = {}
    for check in names:
        for dataset in DATASETS_OF.get(check, ("mnist",)):
            readers.setdefault(dataset, []).append(check)
    present = set()
    for dataset in sorted(readers):
        try:
            load_split(dataset, root, train=False, download=False)
            present.add(dataset)
        except DataMissingError:
            pass
    for check in names:  # only once the features' own dataset is there can the cache be looked up
        if EXTRACTED.get(check) in present and (source := extractor_needed(EXTRACTED[check], root)):
            readers.setdefault(source, []).append(f"{check}, its feature extractor's training: not cached")
            with contextlib.suppress(DataMissingError):
                load_split(source, root, train=False, download=False)
                present.add(source)
    return [f"{d} in {root / DATASETS.get(d).folder} (read by {', '.join(c)})"
            for d, c in sorted(readers.items()) if d not in present]


def run_one(ctx: Ctx, name: str, check) -> dict:
    start = time.perf_counter()
    try:
        ok, what = check(ctx)
    except Exception as exc:  # a broken check is reported as failed with its error, the others still run
        ok, what = False, f"{type(exc).__name__}: {exc}"
    record = {"check": name, "ok": bool(ok), "seconds": round(time.perf_counter() - start, 1), "detail": what}
    print(f"[gpu_check] {'ok  ' if ok else 'FAIL'} {name} ({record['seconds']} s): {what}", flush=True)
    return record


def environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--tiny", action="store_true", help="tiny runs (a CPU dry run of the checks)")
    parser.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_check"))
    parser.add_argument("--only", default="", help="comma-separated check names (default: all)")
    parser.add_argument("--jobs", type=int, default=4, help="checks at a time (they share the GPU)")
    args = parser.parse_args()
    table = checks()
    if args.accelerator != "cpu":  # fp16 autocast needs a GPU; cltrain refuses 16-mixed on the CPU
        table["resume_16mixed"] = lambda ctx: check_resume(ctx, "16mixed", "trainer.precision=16-mixed")
    names = [n for n in args.only.split(",") if n] or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        print(f"gpu_check: unknown check(s) {unknown}; valid: {', '.join(table)}", file=sys.stderr)
        return 2
    missing = missing_datasets(names)
    if missing:
        print(f"gpu_check: not found: {'; '.join(missing)}; put torchvision's files there or point $CLTRAIN_DATA at "
              "a folder that has them (or leave those checks out with --only)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args.accelerator, out / "runs", args.tiny)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda n: run_one(ctx, n, table[n]), names))
    summary = {"environment": environment(), "accelerator": args.accelerator, "tiny": args.tiny,
               "seconds": round(time.perf_counter() - start, 1), "checks": records}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    (out / "gpu_check.log").write_text("\n\n".join(ctx.log))
    failed = [r["check"] for r in records if not r["ok"]]
    print(f"[gpu_check] {len(records) - len(failed)}/{len(records)} ok in {summary['seconds']} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
