"""Benchmark: `bench/pmnist_naive` through cltrain against hand-written PyTorch loops doing the same job.

The job: MNIST from the data root, an MLP 784-512-512-10 (--hidden), SGD lr 0.01 momentum 0.9, batch 128,
1 epoch on each of --tasks permuted-MNIST tasks (task 0 the identity), a test of every task after every task.
Rows (each a fresh process; --repeats rounds of alternating runs, the order rotating every round):

  loop (fastest)    normalises the data to float once, permutes each task's data once per phase, slices batches
  loop (per batch)  permutes and normalises every batch, as cltrain's per-batch path does
  cltrain           `cltrain fit bench/pmnist_naive` (CSV logger, checkpoints, plots; progress bar and wandb off)
  cltrain, no FWT   the same with trainer.eval_init=false: no evaluation of the untrained network (the b_j of
                    forward transfer), which the loops do not make either: the same job as theirs
  cltrain (base)    the same with another checkout's code (--base /work/main), measured in the same session

Per row: the whole process (started to exited, measured outside: interpreter, imports, data, training, outputs)
and in-process (imports done to job done, measured inside), median and range over the rounds, the peak RSS
(and on CUDA the peak allocated device memory). Ratios are per round against the fastest loop of that round,
then median and range; the per-step overhead is (in-process time - the fastest loop's) / training steps.

    python scripts/bench_pmnist.py [--tasks 10] [--repeats 3] [--hidden 512 512] [--base /work/main]
                                   [--device cpu|cuda] [--quick] [--rows fast,batch,cltrain,nofwt,base] [key=value ...]

--quick: one round of 3 tasks (a few minutes on a GPU machine). Extra key=value go to every cltrain row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEAN, STD, BATCH, EVAL_BATCH = 0.1307, 0.3081, 128, 2000


# ---- the measured jobs (run in a child process: `bench_pmnist.py --worker KIND ...`) ---------------------
def mlp(hidden: list[int]):
    from torch import nn

    layers, width = [], 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def mnist(root: str, device: str):
    import torch
    import torchvision

    train = torchvision.datasets.MNIST(root, train=True, download=False)
    test = torchvision.datasets.MNIST(root, train=False, download=False)
    move = lambda t: t.to(device)  # noqa: E731
    return (move(train.data.view(-1, 784)), move(train.targets), move(test.data.view(-1, 784)),
            move(test.targets), torch)


def loop(root: str, n_tasks: int, seed: int, hidden: list[int], device: str, per_batch: bool) -> float:
    """A hand-written loop: tensors in memory, whole-batch transforms, no DataLoader. Fastest form (per_batch
    False): normalise to float once, permute a task's data once per phase, slice batches from it."""
    import torch.nn.functional as F

    xtr, ytr, xte, yte, torch = mnist(root, device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.arange(784)] + [torch.randperm(784, generator=gen) for _ in range(n_tasks - 1)]
    perms = [p.to(device) for p in perms]
    norm = lambda x: (x.float() / 255.0 - MEAN) / STD  # noqa: E731
    if not per_batch:
        xtr, xte = norm(xtr), norm(xte)
    model = mlp(hidden).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    final = []
    # Rows and pixel orders are taken with index_select: on a CPU torch's advanced indexing (x[rows], x[:, perm])
    # returns the same values more slowly (a whole-dataset permutation ~2x, a test set's ~4x), which a loop
    # written for speed would not pay.
    for task in range(n_tasks):
        model.train()
        data = xtr if per_batch else xtr.index_select(1, perms[task])  # the fastest loop: permuted once a phase
        order = torch.randperm(len(ytr), generator=gen).to(device)
        for start in range(0, len(ytr), BATCH):
            rows = order[start:start + BATCH]
            x = data.index_select(0, rows)
            x = norm(x.index_select(1, perms[task])) if per_batch else x
            loss = F.cross_entropy(model(x), ytr.index_select(0, rows))
            opt.zero_grad()
            loss.backward()
            opt.step()
        del data
        model.eval()
        with torch.no_grad():
            correct = torch.zeros(n_tasks, device=device)
            for j in range(n_tasks):
                test = xte if per_batch else xte.index_select(1, perms[j])
                for s in range(0, len(yte), EVAL_BATCH):
                    x = test[s:s + EVAL_BATCH]
                    x = norm(x.index_select(1, perms[j])) if per_batch else x
                    correct[j] += (model(x).argmax(1) == yte[s:s + EVAL_BATCH]).sum()
            final = (correct / len(yte)).tolist()  # one device sync per phase
    return sum(final) / len(final)


def cltrain_job(n_tasks: int, seed: int, hidden: list[int], device: str, run_dir: str, overrides: list[str]) -> float:
    from cltrain.cli import main

    args = ["fit", "bench/pmnist_naive", f"stream.n_tasks={n_tasks}", f"seed={seed}", f"run_dir={run_dir}",
            f"model.hidden=[{','.join(map(str, hidden))}]", "trainer.progress_bar=false", "logger.wandb.mode=disabled",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", *overrides]
    if main(args) != 0:
        raise SystemExit(f"cltrain fit failed: {' '.join(args)}")
    return json.loads((Path(run_dir) / "metrics.json").read_text())["acc"]


def worker(args: argparse.Namespace) -> None:
    """One measured job in this process; prints a JSON line: in-process seconds, ACC, peak device memory."""
    import torch

    if args.worker == "cltrain":
        import cltrain.experiment  # noqa: F401  (start-up: Lightning and every component, as `cltrain fit` imports them)
    else:
        import torchvision  # noqa: F401
    root = os.environ["CLTRAIN_DATA"]
    start, cpu = time.perf_counter(), time.process_time()
    if args.worker == "cltrain":
        acc = cltrain_job(args.tasks, args.seed, args.hidden, args.device, args.run_dir, args.overrides)
    else:
        acc = loop(root, args.tasks, args.seed, args.hidden, args.device, per_batch=args.worker == "batch")
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else 0
    print("RESULT " + json.dumps({"seconds": seconds, "cpu": cpu, "acc": acc, "device_peak": peak}), flush=True)


# ---- the orchestrator ---------------------------------------------------------------------------------
ROWS = {"fast": "loop (fastest)", "batch": "loop (per batch)", "cltrain": "cltrain", "nofwt": "cltrain, no FWT",
        "base": "cltrain (base)"}
ROW_OVERRIDES = {"nofwt": ["trainer.eval_init=false"]}


def run_one(row: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """Measure one row; its peak RSS from wait4 on its own pid (RUSAGE_CHILDREN would be the max over all)."""
    kind = row if row in ("fast", "batch") else "cltrain"
    overrides = args.overrides + ROW_OVERRIDES.get(row, [])
    code = args.base if row == "base" else REPO
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--tasks", str(args.tasks), "--seed",
           str(args.seed), "--device", args.device, "--run-dir", str(run_dir), "--hidden", *map(str, args.hidden),
           *(["--"] + overrides if overrides else [])]
    return timed_child(cmd, code, env, run_dir.with_suffix(".out"), ROWS[row])


def timed_child(cmd: list[str], cwd: Path, env: dict, out_path: Path, label: str) -> dict:
    """Run one measured child process: its RESULT line, plus its whole-process seconds and peak RSS (wait4).

    Shared with scripts/bench_hot_paths.py."""
    with open(out_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        whole = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{text[-3000:]}")
    result = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])
    return {**result, "whole": whole, "rss_gib": usage.ru_maxrss / 2**20}


def spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    return f"{med:{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]" if len(values) > 1 else f"{med:{fmt}}"


def report(rows: list[str], runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    steps = args.tasks * -(-60000 // BATCH)
    print(f"\n{args.tasks} tasks, {steps} training steps, hidden {args.hidden}, {args.device}, "
          f"{len(runs['fast'])} round(s); median [min-max]")
    print(f"{'row':18s} {'whole s':>22s} {'in-process s':>22s} {'whole/fast':>20s} {'in-proc/fast':>20s} "
          f"{'overhead us/step':>17s} {'peak RSS GiB':>13s} {'ACC':>7s}")
    fast = runs["fast"]
    for row in rows:
        r = runs[row]
        whole_ratio = [a["whole"] / b["whole"] for a, b in zip(r, fast)]
        inproc_ratio = [a["seconds"] / b["seconds"] for a, b in zip(r, fast)]
        overhead = [1e6 * (a["seconds"] - b["seconds"]) / steps for a, b in zip(r, fast)]
        device = f"  device peak {statistics.median(x['device_peak'] for x in r) / 2**30:.2f} GiB" \
            if args.device == "cuda" else ""
        print(f"{ROWS[row]:18s} {spread([x['whole'] for x in r], '7.2f'):>22s} "
              f"{spread([x['seconds'] for x in r], '7.2f'):>22s} {spread(whole_ratio, '.3f'):>20s} "
              f"{spread(inproc_ratio, '.3f'):>20s} {spread(overhead, '6.0f'):>17s} "
              f"{max(x['rss_gib'] for x in r):13.2f} {statistics.median(x['acc'] for x in r):7.4f}{device}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--base", type=Path, default=None, help="another checkout for the 'cltrain (base)' row")
    parser.add_argument("--rows", default=None, help="comma-separated subset of fast,batch,cltrain,nofwt,base")
    parser.add_argument("--quick", action="store_true", help="one round of 3 tasks")
    parser.add_argument("--worker", choices=["fast", "batch", "cltrain"], help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if not os.environ.get("CLTRAIN_DATA"):
        print("set CLTRAIN_DATA to the folder holding MNIST/raw", file=sys.stderr)
        return 2
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.tasks, args.repeats = 3, 1
    default = ["fast", "batch", "cltrain", "nofwt", *(["base"] if args.base else [])]
    rows = args.rows.split(",") if args.rows else default
    if "fast" not in rows or any(r not in ROWS for r in rows) or ("base" in rows and not args.base):
        print(f"--rows: a comma-separated subset of {','.join(ROWS)} with fast (the reference); base needs --base",
              file=sys.stderr)
        return 2
    import tempfile

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    runs: dict[str, list[dict]] = {row: [] for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.repeats):
            order = rows[rnd % len(rows):] + rows[:rnd % len(rows)]  # who goes first rotates
            for row in order:
                result = run_one(row, args, Path(tmp) / f"{row}_{rnd}")
                runs[row].append(result)
                print(f"round {rnd + 1} {ROWS[row]:18s} whole {result['whole']:7.2f} s  in-process "
                      f"{result['seconds']:7.2f} s (CPU {result['cpu']:7.2f} s)  RSS {result['rss_gib']:.2f} GiB  ACC {result['acc']:.4f}  "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    report(rows, runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
