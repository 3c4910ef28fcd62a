"""Benchmark: cltrain's other hot paths against hand-written PyTorch doing the same work (issue 13).

Measured the way scripts/bench_pmnist.py measures `bench/pmnist_naive` (whose helpers this imports): each row a
fresh process, --rounds rounds of alternating runs (the order rotating every round), whole-process and in-process
seconds, ratios per round against that round's reference loop, per-step overhead in µs, peak RSS.

  --path replay    `cltrain fit bench/pmnist_replay` (fine-tuning + the replay plugin, reservoir 2000, replay batch
                   = training batch) vs a loop that keeps a reservoir of transformed rows on the device and
                   concatenates a 128-row draw from it to every batch
  --path powerlaw  `cltrain fit bench/pmnist_naive stream.schedule=powerlaw` (phase k: the new task plus a
                   power-law share of every older task, batches mixing tasks) vs a loop drawing the same number
                   of rows of each task per phase (the same counts, computed by hand from the same formula)
  --path tame      TAME's expert scoring (`TAME.global_scores`: every expert's loss on the batch, one vmapped
                   forward, read back once; the active expert re-copied into the stacked weights, as after every
                   training step) with 1, 5, 10, 20 experts, µs per step in one process, vs a Python loop over the
                   experts (E forwards, one read-back) and a vmapped forward on weights stacked once
  --path rotated   `cltrain fit bench/pmnist_naive stream.name=rotated` (task t rotated by t * 180 / T degrees,
                   bilinear, zero fill, then normalised) vs loops that make each task's sampling grid once and
                   rotate a task's rows once per phase and every test set once (fast) or every batch (batch)
  --path ddp       `cltrain fit bench/pmnist_naive trainer.devices=2 trainer.strategy=ddp` on CPU (gloo) vs a
                   torch.distributed DistributedDataParallel loop over 2 processes (always on the CPU)
  --path ewc       offline EWC's penalty and its backward with 1, 2, 5, 10, 20 finished tasks (`EWC.penalty`: the
                   per-task (Fisher, anchor) pairs merged into one quadratic), µs per step in one process, vs the
                   per-task sum it replaces (one term per finished task), on an MLP 784-hidden-10

Rows of the process paths: `fast` normalises the data once and transforms each task's rows once per phase
(the reference), `batch` transforms every batch (on this 2-core CPU the faster of the two), `cltrain`, and
`base` (the same cltrain command from another checkout, --base).

    python scripts/bench_hot_paths.py --path replay [--rounds 3] [--tasks 3] [--train-per-task N]
                                      [--hidden 512 512] [--device cpu|cuda] [--rows fast,batch,cltrain,base]
    python scripts/bench_hot_paths.py --all --device cuda --rounds 2     # every hot path (DDP on the CPU)
    python scripts/bench_hot_paths.py --all --quick                      # smoke run: tiny sizes, one round
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pmnist import BATCH, EVAL_BATCH, MEAN, STD, mlp, mnist, spread, timed_child  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAPACITY = 2000  # the replay reservoir
EXPERTS = (1, 5, 10, 20)
EWC_TASKS = (1, 2, 5, 10, 20)
PATHS = ("replay", "powerlaw", "rotated", "tame", "ddp", "ewc")  # --all runs them in this order
ROWS = {"fast": "loop (fastest)", "batch": "loop (per batch)", "cltrain": "cltrain", "base": "cltrain (base)"}
# path -> (experiment, overrides) of the cltrain rows
CLTRAIN = {
    "replay": ("bench/pmnist_replay", [f"plugins.replay.capacity={CAPACITY}"]),
    "powerlaw": ("bench/pmnist_naive", ["stream.schedule=powerlaw"]),
    "ddp": ("bench/pmnist_naive", ["trainer.devices=2", "trainer.strategy=ddp"]),
    "rotated": ("bench/pmnist_naive", ["stream.name=rotated"]),
}


# ---- shared pieces of the hand-written loops ------------------------------------------------------------
def take(t, rows):
    """t[rows], by index_select: the same values, and on a CPU faster than advanced indexing (which a loop
    written for speed would not pay; since 2026-11-30 here, as in cltrain)."""
    return t.index_select(0, rows)


class Data:
    """MNIST on the device, each task's training rows (a seeded subset with --train-per-task) and pixel order."""

    normalise_ahead = True

    def __init__(self, args: argparse.Namespace, device: str):
        xtr, ytr, xte, yte, torch = mnist(os.environ["CLTRAIN_DATA"], device)
        self.torch, self.device = torch, device
        self.gen = torch.Generator().manual_seed(args.seed)
        n = args.train_per_task or len(ytr)
        self.rows = [torch.randperm(len(ytr), generator=self.gen)[:n].to(device) for _ in range(args.tasks)]
        perms = [torch.arange(784)] + [torch.randperm(784, generator=self.gen) for _ in range(args.tasks - 1)]
        self.perms = torch.stack(perms).to(device)
        self.xtr, self.ytr, self.xte, self.yte = xtr, ytr, xte, yte
        # the fast loop normalises once (not when a task's transform must come before normalising)
        self.xtr_norm = self.norm(xtr) if args.worker_row != "batch" and self.normalise_ahead else None

    @staticmethod
    def norm(x):
        return (x.float() / 255.0 - MEAN) / STD

    def transform(self, x, task: int):
        """uint8 rows of the images -> task `task`'s normalised inputs."""
        return self.norm(x.index_select(1, self.perms[task]))

    def test_x(self, task: int, rows):
        return self.transform(take(self.xte, rows), task)

    def task_x(self, task: int, rows):
        """Inputs of one task's rows, transformed: sliced from the normalised data (fast) or per call (batch)."""
        if self.xtr_norm is not None:
            return take(self.xtr_norm, rows).index_select(1, self.perms[task])
        return self.transform(take(self.xtr, rows), task)

    def shuffled(self, n: int):
        return self.torch.randperm(n, generator=self.gen).to(self.device)

    def evaluate(self, model, n_tasks: int, rank: int = 0, world: int = 1) -> list:
        """Correct predictions per task over this rank's share of every test set (a tensor; no sync here)."""
        torch = self.torch
        model.eval()
        correct = torch.zeros(n_tasks, device=self.device)
        share = torch.arange(rank, len(self.yte), world, device=self.device)
        with torch.no_grad():
            for j in range(n_tasks):
                for s in range(0, len(share), EVAL_BATCH):
                    rows = share[s:s + EVAL_BATCH]
                    x = self.test_x(j, rows)
                    correct[j] += (model(x).argmax(1) == take(self.yte, rows)).sum()
        model.train()
        return correct


class RotatedData(Data):
    """Rotated MNIST as cltrain defines it: task t rotated by t * 180 / T degrees about the centre, the raw
    intensities sampled bilinearly (zero fill), then normalised (so there is nothing to normalise ahead). Each
    task's sampling grid is made once and broadcast over every batch, as torchvision's rotate does; the fast row
    also rotates every test set once for the run."""

    normalise_ahead = False

    def __init__(self, args: argparse.Namespace, device: str):
        import torch.nn.functional as F

        super().__init__(args, device)
        self.F, self.fast, self.test_sets = F, args.worker_row != "batch", {}
        torch = self.torch
        self.grids = []
        for t in range(args.tasks):
            c, s = math.cos(t * math.pi / args.tasks), math.sin(t * math.pi / args.tasks)
            affine = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], device=device)
            self.grids.append(F.affine_grid(affine, [1, 1, 28, 28], align_corners=False))

    def transform(self, x, task: int):
        grid = self.grids[task].expand(len(x), -1, -1, -1)
        rotated = self.F.grid_sample(x.view(-1, 1, 28, 28).float(), grid, mode="bilinear", align_corners=False)
        return self.norm(rotated.view(len(x), 784))

    def test_x(self, task: int, rows):
        if not self.fast:
            return super().test_x(task, rows)
        if task not in self.test_sets:
            self.test_sets[task] = self.transform(self.xte, task)
        return take(self.test_sets[task], rows)


def new_model(args: argparse.Namespace, device: str):
    import torch

    torch.manual_seed(args.seed)
    model = mlp(args.hidden).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def sgd_step(model, opt, x, y) -> None:
    import torch.nn.functional as F

    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def accuracy(correct, n_test: int) -> float:
    acc = (correct / n_test).tolist()  # one device sync, at the end
    return sum(acc) / len(acc)


# ---- replay --------------------------------------------------------------------------------------------
class Reservoir:
    """Algorithm R over whole batches, on the device: row p of the stream goes to slot p while the buffer fills,
    then to a uniform slot in [0, p] if that is < capacity."""

    def __init__(self, torch, device: str, capacity: int):
        self.torch, self.capacity, self.seen = torch, capacity, 0
        self.x = torch.empty(capacity, 784, device=device)
        self.y = torch.empty(capacity, dtype=torch.long, device=device)

    def add(self, x, y) -> None:
        torch = self.torch
        pos = torch.arange(self.seen, self.seen + len(y), device=y.device)
        draw = (torch.rand(len(y), device=y.device) * (pos + 1)).long()
        slots = torch.where(pos < self.capacity, pos, torch.where(draw < self.capacity, draw, -1))
        keep = slots >= 0
        self.x[slots[keep]], self.y[slots[keep]] = x[keep], y[keep]
        self.seen += len(y)

    def sample(self, n: int):
        picks = self.torch.randint(min(self.seen, self.capacity), (n,), device=self.y.device)
        return take(self.x, picks), take(self.y, picks)


def replay_loop(args: argparse.Namespace) -> tuple[float, int]:
    data = Data(args, args.device)
    torch = data.torch
    model, opt = new_model(args, args.device)
    buffer, steps, correct = Reservoir(torch, args.device, CAPACITY), 0, None
    for task in range(args.tasks):
        rows = data.rows[task]
        phase_x = data.task_x(task, rows) if args.worker_row == "fast" else None  # once per phase
        order = data.shuffled(len(rows))
        for start in range(0, len(rows), BATCH):
            pick = order[start:start + BATCH]
            x = take(phase_x, pick) if phase_x is not None else data.task_x(task, take(rows, pick))
            y = take(data.ytr, take(rows, pick))
            xb, yb = x, y
            if buffer.seen:
                bx, by = buffer.sample(BATCH)
                xb, yb = torch.cat([x, bx]), torch.cat([y, by])
            sgd_step(model, opt, xb, yb)
            buffer.add(x, y)
            steps += 1
        correct = data.evaluate(model, args.tasks)
    return accuracy(correct, len(data.yte)), steps


# ---- power-law mixed phases ----------------------------------------------------------------------------
def powerlaw_counts(n_tasks: int, n: int, p_min: float = 0.10) -> list[list[int]]:
    """C[k][j], the min-proportion power law by hand: n(x) = round(N x^-b), b = ln(1/p_min) / ln(T-1), in [1, N]."""
    b = 0.0 if n_tasks <= 2 else math.log(1 / p_min) / math.log(n_tasks - 1)
    return [[n if j == k else (min(n, max(1, round(n * (k - j) ** -b))) if j < k else 0) for j in range(n_tasks)]
            for k in range(n_tasks)]


def powerlaw_loop(args: argparse.Namespace) -> tuple[float, int]:
    data = Data(args, args.device)
    torch = data.torch
    model, opt = new_model(args, args.device)
    steps, correct = 0, None
    for counts in powerlaw_counts(args.tasks, len(data.rows[0])):
        parts = [(j, data.rows[j][:c]) for j, c in enumerate(counts) if c]  # nested subsets: a prefix per task
        base = torch.cat([rows for _, rows in parts])
        tids = torch.cat([torch.full_like(rows, j) for j, rows in parts])
        if args.worker_row == "fast":  # the phase's rows transformed once, task by task
            phase_x = torch.cat([data.task_x(j, rows) for j, rows in parts])
        order = data.shuffled(len(base))
        for start in range(0, len(base), BATCH):
            pick = order[start:start + BATCH]
            if args.worker_row == "fast":
                x = take(phase_x, pick)
            else:  # rows of several tasks: one gather with each row's pixel order
                x = data.norm(torch.gather(take(data.xtr, take(base, pick)), 1, take(data.perms, take(tids, pick))))
            sgd_step(model, opt, x, take(data.ytr, take(base, pick)))
            steps += 1
        correct = data.evaluate(model, args.tasks)
    return accuracy(correct, len(data.yte)), steps


# ---- DDP: two gloo processes ---------------------------------------------------------------------------
def ddp_rank(rank: int, args: argparse.Namespace, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as cltrain does: a share of the cores each
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    data = Data(args, "cpu")  # same seed on both ranks: the same rows, orders and global batches
    model, _ = new_model(args, "cpu")
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    steps, correct = 0, None
    for task in range(args.tasks):
        rows = data.rows[task]
        phase_x = data.task_x(task, rows) if args.worker_row == "fast" else None
        order = data.shuffled(len(rows))
        for start in range(0, len(rows), BATCH):
            pick = order[start:start + BATCH][rank::2]  # this rank's rows of the global batch, as cltrain
            x = take(phase_x, pick) if phase_x is not None else data.task_x(task, take(rows, pick))
            sgd_step(ddp, opt, x, take(data.ytr, take(rows, pick)))
            steps += 1
        correct = data.evaluate(model, args.tasks, rank, 2)
        dist.all_reduce(correct)
    if rank == 0:
        Path(out).write_text(json.dumps({"acc": accuracy(correct, len(data.yte)), "steps": steps}))
    dist.destroy_process_group()


def ddp_loop(args: argparse.Namespace) -> tuple[float, int]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(args.run_dir).with_suffix(".ddp.json")
    mp.spawn(ddp_rank, args=(args, port, str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    return result["acc"], result["steps"]


# ---- rotated MNIST ---------------------------------------------------------------------------------------
def rotated_loop(args: argparse.Namespace) -> tuple[float, int]:
    data = RotatedData(args, args.device)
    model, opt = new_model(args, args.device)
    steps, correct = 0, None
    for task in range(args.tasks):
        rows = data.rows[task]
        phase_x = data.task_x(task, rows) if args.worker_row == "fast" else None  # rotated once per phase
        order = data.shuffled(len(rows))
        for start in range(0, len(rows), BATCH):
            pick = order[start:start + BATCH]
            x = take(phase_x, pick) if phase_x is not None else data.task_x(task, take(rows, pick))
            sgd_step(model, opt, x, take(data.ytr, take(rows, pick)))
            steps += 1
        correct = data.evaluate(model, args.tasks)
    return accuracy(correct, len(data.yte)), steps


LOOPS = {"replay": replay_loop, "powerlaw": powerlaw_loop, "ddp": ddp_loop, "rotated": rotated_loop}


# ---- cltrain rows ----------------------------------------------------------------------------------------
def cltrain_job(args: argparse.Namespace) -> tuple[float, int]:
    from cltrain.cli import main

    experiment, extra = CLTRAIN[args.path]
    device = "cpu" if args.path == "ddp" else args.device
    cmd = ["fit", experiment, f"stream.n_tasks={args.tasks}", f"seed={args.seed}", f"run_dir={args.run_dir}",
           f"model.hidden=[{','.join(map(str, args.hidden))}]", "trainer.progress_bar=false",
           "logger.wandb.mode=disabled", f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", *extra,
           *([f"stream.train_per_task={args.train_per_task}"] if args.train_per_task else []), *args.overrides]
    if main(cmd) != 0:
        raise SystemExit(f"cltrain fit failed: {' '.join(cmd)}")
    metrics = json.loads((Path(args.run_dir) / "metrics.json").read_text())
    return metrics["acc"], metrics["steps"]


# ---- TAME's expert scoring (one process; rows alternate inside it) ----------------------------------------
def tame_setup(args: argparse.Namespace, n_experts: int):
    """A TAME learner holding n_experts LeNet-5 experts (tame/pmnist's network) and real MNIST batches."""
    from cltrain.config import ModelConfig, OptimConfig
    from cltrain.learners.tame import TAME, TAMEConfig
    from cltrain.nn.lenet import build_lenet

    factory = lambda: build_lenet(ModelConfig(name="lenet"), (1, 28, 28), 10)  # noqa: E731
    learner = TAME(factory(), OptimConfig(), TAMEConfig(), model_factory=factory, seed=args.seed).to(args.device)
    for _ in range(n_experts - 1):
        learner._spawn()
    xtr, ytr, _, _, _ = mnist(os.environ["CLTRAIN_DATA"], args.device)
    x = ((xtr[:BATCH * 8].float() / 255.0 - MEAN) / STD).view(-1, 1, 28, 28)
    batches = [(x[i:i + BATCH], ytr[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    return learner, batches


def tame_rows(learner):
    """name -> one scoring step on (x, y) returning the experts' losses on the host."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    experts = [copy.deepcopy(e).eval() for e in learner.experts]  # the loops' own copies, in eval mode once
    params, buffers = stack_module_state(experts)
    template = copy.deepcopy(experts[0]).to("meta")
    bounded = lambda logits, y: F.cross_entropy(torch.sigmoid(logits), y)  # noqa: E731

    @torch.no_grad()
    def loop(x, y):
        return torch.stack([bounded(e(x), y) for e in experts]).tolist()

    @torch.no_grad()
    def stacked(x, y):
        logits = vmap(lambda p, b: functional_call(template, (p, b), (x,)))(params, buffers)
        loss = F.cross_entropy(torch.sigmoid(logits.flatten(0, 1)), y.repeat(len(experts)), reduction="none")
        return loss.view(len(experts), -1).mean(1).tolist()

    active = learner.experts[learner.active]

    def cltrain(x, y):
        # as in training, the active expert changed since the last scoring (an in-place write that keeps its
        # values moves its version counter), so the stacked copy re-copies that one expert every step
        with torch.no_grad():
            next(active.parameters()).mul_(1.0)
        return learner.global_scores(x, y)[0]

    return {"loop": loop, "cltrain": cltrain, "prestacked": stacked}


TAME_ROWS = {"loop": "loop over experts", "cltrain": "cltrain (vmapped)", "prestacked": "vmap, pre-stacked"}


def time_rows(args: argparse.Namespace, steps: dict, warmup: int) -> dict[str, list[float]]:
    """µs per step of each row (a callable of the step index), --rounds rounds alternating the rows (the order
    rotating), each after `warmup` steps of its own."""
    import torch

    names = list(steps)
    out: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            for i in range(warmup):
                steps[name](i)
            start = time.perf_counter()
            for i in range(args.tame_steps):
                steps[name](i)
            if args.device == "cuda":
                torch.cuda.synchronize()
            out[name].append(1e6 * (time.perf_counter() - start) / args.tame_steps)
    return out


def tame_worker(args: argparse.Namespace) -> dict:
    """µs per scoring step for every E and row, each round alternating the rows (the order rotating)."""
    out: dict = {}
    for n_experts in EXPERTS:
        learner, batches = tame_setup(args, n_experts)
        rows = tame_rows(learner)
        check = [rows[r](*batches[0]) for r in rows]  # the three must score the same losses
        tol = 1e-4 if args.device == "cpu" else 2e-3  # CUDA convolutions may run in TF32, grouped or not
        if max(abs(a - b) for other in check[1:] for a, b in zip(check[0], other)) > tol:
            raise SystemExit(f"E={n_experts}: the scoring rows disagree: {check}")
        steps = {name: (lambda i, row=row: row(*batches[i % len(batches)])) for name, row in rows.items()}
        out[n_experts] = time_rows(args, steps, warmup=2)
        print(f"E={n_experts}: " + ", ".join(f"{n} {statistics.median(v):.0f} us" for n, v in out[n_experts].items())
              + f" (load {os.getloadavg()[0]:.2f})", flush=True)
    return out


def ewc_rows(learner) -> dict:
    """name -> one penalty + backward on the learner's model (its gradients zeroed first), returning the value."""
    from cltrain.learners.base import param_dict

    def per_task():
        params = param_dict(learner.model)
        total = sum((f[k] * (params[k] - a[k]).pow(2)).sum()
                    for f, a in zip(learner.fishers, learner.anchors) for k in f)
        return 0.5 * learner.method.lam * total

    def step(penalty):
        learner.model.zero_grad(set_to_none=False)
        value = penalty()
        value.backward()
        return value.item()

    return {"per_task": lambda: step(per_task), "cltrain": lambda: step(learner.penalty)}


EWC_ROWS = {"per_task": "sum over tasks", "cltrain": "cltrain (merged)"}


def ewc_worker(args: argparse.Namespace) -> dict:
    """µs per penalty step for every number of finished tasks and row, rounds alternating the rows."""
    import torch

    from cltrain.config import OptimConfig
    from cltrain.learners.ewc import EWC, EWCConfig
    from cltrain.nn.mlp import MLP

    torch.manual_seed(args.seed)
    learner = EWC(MLP(784, list(args.hidden), 10), OptimConfig(), EWCConfig(lam=1.0)).to(args.device)
    shapes = {k: p.shape for k, p in learner.model.named_parameters()}
    out: dict = {}
    for n_tasks in EWC_TASKS:
        pairs = [({k: torch.rand(s, device=args.device) for k, s in shapes.items()},
                  {k: torch.randn(s, device=args.device) for k, s in shapes.items()}) for _ in range(n_tasks)]
        learner.set_extra_state({"fishers": [f for f, _ in pairs], "anchors": [a for _, a in pairs]})
        rows = ewc_rows(learner)
        values = [rows[r]() for r in rows]  # the merged penalty must be the sum's
        if not math.isclose(values[0], values[1], rel_tol=1e-4):
            raise SystemExit(f"{n_tasks} tasks: the penalties disagree: {values}")
        # 5 warm-up steps: the allocator's first blocks of the new sizes, the caches
        out[n_tasks] = time_rows(args, {name: (lambda i, row=row: row()) for name, row in rows.items()}, warmup=5)
        print(f"{n_tasks} tasks: " + ", ".join(f"{n} {statistics.median(v):.0f} us" for n, v in out[n_tasks].items())
              + f" (load {os.getloadavg()[0]:.2f})", flush=True)
    return out


# ---- the orchestrator ---------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import torch

    if args.path in ("tame", "ewc"):
        print("RESULT " + json.dumps({args.path: (tame_worker if args.path == "tame" else ewc_worker)(args)}),
              flush=True)
        return
    if args.worker_row == "cltrain":
        import cltrain.experiment  # noqa: F401  (start-up, as `cltrain fit` imports it)
    else:
        import torchvision  # noqa: F401
    start, cpu = time.perf_counter(), time.process_time()
    acc, steps = cltrain_job(args) if args.worker_row == "cltrain" else LOOPS[args.path](args)
    if args.device == "cuda" and args.path != "ddp":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" and args.path != "ddp" else 0
    if os.environ.get("LOCAL_RANK", "0") == "0":  # Lightning's DDP re-runs this command as rank 1
        print("RESULT " + json.dumps({"seconds": seconds, "cpu": cpu, "acc": acc, "steps": steps,
                                      "device_peak": peak}), flush=True)


def child(args: argparse.Namespace, path: str, row: str, run_dir: Path) -> dict:
    code = args.base if row == "base" else REPO
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--path", path, "--worker-row",
           "cltrain" if row == "base" else row, "--tasks", str(args.tasks), "--seed", str(args.seed),
           "--device", args.device, "--run-dir", str(run_dir), "--rounds", str(args.rounds),
           "--tame-steps", str(args.tame_steps), "--hidden", *map(str, args.hidden),
           *(["--train-per-task", str(args.train_per_task)] if args.train_per_task else []),
           *(["--"] + args.overrides if args.overrides else [])]
    return timed_child(cmd, code, env, run_dir.with_suffix(".out"), f"{path} {ROWS.get(row, row)}")


def run_process_path(args: argparse.Namespace, path: str, rows: list[str], tmp: Path) -> None:
    runs: dict[str, list[dict]] = {row: [] for row in rows}
    for rnd in range(args.rounds):
        for row in rows[rnd % len(rows):] + rows[:rnd % len(rows)]:  # who goes first rotates
            r = child(args, path, row, tmp / f"{path}_{row}_{rnd}")
            runs[row].append(r)
            print(f"{path} round {rnd + 1} {ROWS[row]:18s} whole {r['whole']:7.2f} s  in-process {r['seconds']:7.2f} s "
                  f"(CPU {r['cpu']:7.2f} s)  RSS {r['rss_gib']:.2f} GiB  steps {r['steps']}  ACC {r['acc']:.4f}  "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    report(path, rows, runs, args)


def report(path: str, rows: list[str], runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    fast = runs["fast"]
    device = "cpu (gloo, 2 processes)" if path == "ddp" else args.device
    print(f"\n{path}: {args.tasks} tasks, {fast[0]['steps']} training steps, hidden {args.hidden}, "
          f"{args.train_per_task or 60000} rows/task, {device}, {len(fast)} round(s); median [min-max]")
    print(f"{'row':18s} {'whole s':>22s} {'in-process s':>22s} {'whole/fast':>20s} {'in-proc/fast':>20s} "
          f"{'overhead us/step':>17s} {'in-proc CPU s':>14s} {'peak RSS GiB':>13s} {'steps':>6s} {'ACC':>7s}")
    for row in rows:
        r = runs[row]
        if r[0]["steps"] != fast[0]["steps"]:  # then the reference does other work and the ratios mean nothing
            print(f"WARNING: {ROWS[row]} took {r[0]['steps']} steps, the reference {fast[0]['steps']}", flush=True)
        whole_ratio = [a["whole"] / b["whole"] for a, b in zip(r, fast)]
        inproc_ratio = [a["seconds"] / b["seconds"] for a, b in zip(r, fast)]
        overhead = [1e6 * (a["seconds"] - b["seconds"]) / b["steps"] for a, b in zip(r, fast)]
        dev = f"  device peak {statistics.median(x['device_peak'] for x in r) / 2**30:.2f} GiB" \
            if args.device == "cuda" and path != "ddp" else ""
        print(f"{ROWS[row]:18s} {spread([x['whole'] for x in r], '7.2f'):>22s} "
              f"{spread([x['seconds'] for x in r], '7.2f'):>22s} {spread(whole_ratio, '.3f'):>20s} "
              f"{spread(inproc_ratio, '.3f'):>20s} {spread(overhead, '6.0f'):>17s} "
              f"{statistics.median(x['cpu'] for x in r):14.2f} {max(x['rss_gib'] for x in r):13.2f} {r[0]['steps']:6d} "
              f"{statistics.median(x['acc'] for x in r):7.4f}{dev}", flush=True)
    print(flush=True)


def run_in_process(args: argparse.Namespace, tmp: Path, path: str, title: str, count: str, names: dict[str, str],
                   reference: str) -> None:
    """Run an in-process path (TAME, EWC) in a fresh process and print µs per step for every count and row, with
    each row's ratio per round against the reference row and against its own time at the smallest count."""
    r = child(args, path, path, tmp / path)
    out = {int(k): v for k, v in r[path].items()}
    smallest = min(out)
    print(f"\n{path}: {title}, {args.device}, {args.rounds} round(s) of {args.tame_steps} steps; us per step, "
          f"median [min-max]; ratio per round against the {names[reference]}")
    print(f"{count:>7s} {'row':20s} {'us/step':>22s} {'/' + reference:>20s} {f'/(its {count} {smallest})':>16s}")
    for n, rows in out.items():
        for name, values in rows.items():
            ratio = [a / b for a, b in zip(values, rows[reference])]
            scale = statistics.median(values) / statistics.median(out[smallest][name])
            print(f"{n:7d} {names[name]:20s} {spread(values, '7.0f'):>22s} {spread(ratio, '.3f'):>20s} "
                  f"{scale:16.2f}", flush=True)
    print(f"whole process {r['whole']:.1f} s, peak RSS {r['rss_gib']:.2f} GiB\n", flush=True)


def run_ewc(args: argparse.Namespace, tmp: Path) -> None:
    run_in_process(args, tmp, "ewc", f"offline EWC's penalty + backward, MLP 784-{'-'.join(map(str, args.hidden))}"
                   f"-10", "tasks", EWC_ROWS, "per_task")


def run_tame(args: argparse.Namespace, tmp: Path) -> None:
    run_in_process(args, tmp, "tame", f"expert scoring of a {BATCH}-row batch, LeNet-5 experts", "experts",
                   TAME_ROWS, "loop")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=PATHS, action="append")
    parser.add_argument("--all", action="store_true", help="every hot path, one after another")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--train-per-task", type=int, default=None, help="rows per task (default all 60,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--tame-steps", type=int, default=200,
                        help="steps per in-process measurement (TAME's scoring, EWC's penalty)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--base", type=Path, default=None, help="another checkout for the 'cltrain (base)' row")
    parser.add_argument("--rows", default=None, help="comma-separated subset of fast,batch,cltrain,base")
    parser.add_argument("--quick", action="store_true", help="smoke run: one round, 2 tasks of 2,000 rows")
    parser.add_argument("--worker-row", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value for the cltrain rows")
    return parser.parse_args()


def main() -> int:
    args = parse()
    if not os.environ.get("CLTRAIN_DATA"):
        print("set CLTRAIN_DATA to the folder holding MNIST/raw", file=sys.stderr)
        return 2
    if args.worker_row:
        args.path = args.path[0]
        worker(args)
        return 0
    paths = list(PATHS) if args.all else (args.path or [])
    default = "fast,batch,cltrain" if args.device == "cpu" else "fast,cltrain"
    rows = (args.rows or default).split(",") + (["base"] if args.base and not args.rows else [])
    if not paths or "fast" not in rows or any(r not in ROWS for r in rows) or ("base" in rows and not args.base):
        print(f"--path {'|'.join(PATHS)} (or --all); --rows: a comma-separated subset of "
              f"{','.join(ROWS)} with fast (the reference); base needs --base", file=sys.stderr)
        return 2
    if args.quick:
        args.tasks, args.rounds, args.train_per_task, args.tame_steps = 2, 1, 2000, 20
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            if path in ("tame", "ewc"):
                (run_tame if path == "tame" else run_ewc)(args, Path(tmp))
            else:
                run_process_path(args, path, rows, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
