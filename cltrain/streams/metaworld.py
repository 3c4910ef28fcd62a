"""Continual-World (Wołczyk et al. 2021) on Meta-World v3: offline datasets in, rollout success rates out.

Every task is one Meta-World v3 environment (39-d states, 4-d actions in [-1, 1], object and goal positions
drawn from the task's 50 variations at each episode). Its training data is an offline dataset of Meta-World's
scripted expert policy at mixed Gaussian action-noise levels (a range of returns), generated once, cached on
disk with its generation config and a SHA-256 checksum, and regenerated when missing or damaged. The stream
keeps every task's steps in flat device tensors; a training row is the index of a step, and `train_batch`
gathers the context window ending there (states, returns-to-go, binned actions) with one batched index op.
Evaluation (`rollout` evaluator) runs seeded episodes of every task in parallel environments, one batched
model forward per decoded action dimension and step for all of them.

Meta-World is an optional extra (`pip install -e '.[rl]'`); it is imported only when data is generated or
rolled out, and its absence is reported at config resolution.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cltrain.config import ExperimentConfig, choice, component_config
from cltrain.distributed import all_sum
from cltrain.errors import ConfigError
from cltrain.evaluation import EVALUATORS
from cltrain.nn.dt import decode_actions
from cltrain.nn.modes import in_mode
from cltrain.streams.base import STREAMS, Stream, Task, resolve_order
from cltrain.streams.datasets import ImageArrays
from cltrain.seeding import derive_seed
from cltrain.streams.transforms import BatchTransform

# CW10 in the paper's order (Wołczyk et al. 2021; L2M's fine-tuning sequence), Meta-World v3 names.
CW10 = ["hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3", "handle-press-side-v3",
        "push-v3", "shelf-place-v3", "window-close-v3", "peg-unplug-side-v3"]
# Pre-training tasks: Meta-World tasks outside CW10 (related skills: reaching, pushing, pressing, opening).
PRETRAIN = ["reach-v3", "button-press-v3", "drawer-close-v3", "door-open-v3", "plate-slide-v3", "window-open-v3",
            "handle-press-v3", "faucet-open-v3", "coffee-button-v3", "drawer-open-v3"]
TASK_LISTS = {"cw10": CW10, "pretrain": PRETRAIN}
EXTRA = "pip install -e '.[rl]' (metaworld==3.1.1, mujoco==3.3.0, gymnasium==1.4.0)"
IGNORE_ACTION = -100  # F.cross_entropy's ignore_index: targets of padding before an episode's start


@dataclass
class MetaWorldConfig:
    tasks: str = choice("cw10", "cw10", "pretrain")  # which task list; stream.n_tasks takes its first n
    episodes: int = 20  # scripted-policy episodes per task in the offline dataset
    noise: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 0.6])  # action-noise sd, cycled per episode
    max_steps: int = 200  # episode length (training data and evaluation)
    context: int = 5  # timesteps per training window
    bins: int = 64  # action tokens per dimension (uniform over [-1, 1])
    rtg_scale: float = 1000.0  # returns-to-go are divided by this
    data_seed: int = 0  # datasets depend on this, not on the experiment seed (one cache for every run)
    eval_episodes: int = 4  # rollouts per task at each evaluation
    evaluator: str = choice("rollout", "rollout", "action_accuracy")  # how each phase scores every task
    test_episodes: int = 2  # noise-free episodes per task held out of training (scored by action_accuracy)
    cache_dir: Optional[str] = None  # None: $CLTRAIN_CACHE/metaworld, else ~/.cache/cltrain/metaworld
    progress_bar: bool = True  # a progress bar over evaluation rollouts


def check_metaworld(cfg: ExperimentConfig) -> MetaWorldConfig:
    """Config-time checks: the rl extra is installed and every option is in range."""
    missing = [m for m in ("metaworld", "mujoco", "gymnasium") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"stream.name=metaworld needs {', '.join(missing)}: install the rl extra, {EXTRA}")
    if cfg.stream.val_fraction > 0:
        raise ConfigError(f"bad value {cfg.stream.val_fraction} for 'stream.val_fraction'; valid: 0 with "
                          f"stream.name=metaworld (its held-out episodes are stream.options.test_episodes)")
    opts = component_config(cfg.stream.options, MetaWorldConfig, "stream.options")
    names = TASK_LISTS[opts.tasks]
    if cfg.stream.n_tasks > len(names):
        raise ConfigError(f"bad value {cfg.stream.n_tasks} for 'stream.n_tasks'; valid: 1..{len(names)} "
                          f"(stream.options.tasks={opts.tasks})")
    clean = sum(1 for e in range(opts.episodes) if opts.noise[e % len(opts.noise)] == min(opts.noise))
    if not 0 <= opts.test_episodes < clean:
        raise ConfigError(f"bad value {opts.test_episodes} for 'stream.options.test_episodes'; valid: 0..{clean - 1} "
                          f"(held out from the {clean} lowest-noise episodes, keeping one for training)")
    for key in ("episodes", "max_steps", "context", "bins", "eval_episodes"):
        if getattr(opts, key) <= 0:
            raise ConfigError(f"bad value {getattr(opts, key)!r} for 'stream.options.{key}'; valid: an integer > 0")
    if opts.bins < 2 or opts.rtg_scale <= 0 or not opts.noise or min(opts.noise) < 0:
        raise ConfigError(f"bad stream.options (bins={opts.bins}, rtg_scale={opts.rtg_scale}, noise={opts.noise}); "
                          "valid: bins >= 2, rtg_scale > 0, a non-empty list of noise levels >= 0")
    return opts


# ---- environments and scripted data -------------------------------------------------------------------
def make_env(name: str, data_seed: int):
    """One Meta-World v3 environment and the task's 50 goal variations (fixed by data_seed)."""
    import metaworld

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = metaworld.MT1(name, seed=data_seed)
        env = bench.train_classes[name]()
    return env, bench.train_tasks


def _recipe_seed(*parts: int) -> int:
    """The scripted datasets' own seed mixing (part of their cached recipe, keyed by data_seed, shared by every
    run whatever its seed): kept bit-identical so cached datasets and the measured results stay valid. Run-seeded
    draws go through cltrain.seeding."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & 0x7FFFFFFFFFFFFFFF
    return value


def scripted_episodes(name: str, episodes: int, noise: list[float], max_steps: int, seed: int) -> dict[str, np.ndarray]:
    """Steps of `episodes` scripted-policy episodes: obs, actions, rewards, episode ids, per-episode success."""
    from metaworld.policies import ENV_POLICY_MAP

    env, variations = make_env(name, seed)
    policy = ENV_POLICY_MAP[name]()
    rng = np.random.default_rng(_recipe_seed(seed, sum(map(ord, name))))
    obs_l, act_l, rew_l, ep_l, success = [], [], [], [], np.zeros(episodes, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the policies warn about clipped gains; the env about its obs bounds
        for e in range(episodes):
            env.set_task(variations[int(rng.integers(len(variations)))])
            obs, _ = env.reset()
            sd = noise[e % len(noise)]
            for _ in range(max_steps):
                act = np.clip(policy.get_action(obs) + sd * rng.standard_normal(4), -1.0, 1.0).astype(np.float32)
                obs_l.append(obs.astype(np.float32))
                obs, reward, _, _, info = env.step(act)
                act_l.append(act)
                rew_l.append(np.float32(reward))
                ep_l.append(e)
                success[e] = max(success[e], float(info["success"]))
    env.close()
    return {"obs": np.stack(obs_l), "act": np.stack(act_l), "rew": np.array(rew_l), "ep": np.array(ep_l),
            "success": success}


def cache_root(opts: MetaWorldConfig) -> Path:
    if opts.cache_dir:
        return Path(opts.cache_dir).expanduser()
    base = os.environ.get("CLTRAIN_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "cltrain") / "metaworld"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def load_or_generate(name: str, opts: MetaWorldConfig) -> dict[str, np.ndarray]:
    """A task's dataset from the cache when its config and checksum match, else generated and cached."""
    gen = {"task": name, "episodes": opts.episodes, "noise": list(opts.noise), "max_steps": opts.max_steps,
           "seed": opts.data_seed, "policy": "metaworld.policies (scripted)", "metaworld": _version("metaworld")}
    key = hashlib.sha256(json.dumps(gen, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root(opts)
    data_path, meta_path = folder / f"{name}-{key}.npz", folder / f"{name}-{key}.json"
    if data_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        with np.load(data_path) as f:
            arrays = {k: f[k] for k in f.files}
        if meta.get("config") == gen and meta.get("sha256") == _digest(arrays):
            return arrays
    print(f"[cltrain] generating the scripted-policy dataset of {name} ({opts.episodes} episodes) -> {data_path}",
          flush=True)
    arrays = scripted_episodes(name, opts.episodes, list(opts.noise), opts.max_steps, opts.data_seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = data_path.with_suffix(f".tmp{os.getpid()}.npz")  # atomic: parallel runs never read half a file
    np.savez(tmp, **arrays)
    os.replace(tmp, data_path)
    meta = {"config": gen, "sha256": _digest(arrays), "steps": int(len(arrays["rew"])),
            "scripted_success": float(arrays["success"].mean())}
    tmp_meta = meta_path.with_suffix(f".tmp{os.getpid()}")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_path)
    return arrays


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


# ---- the stream ---------------------------------------------------------------------------------------
@dataclass
class RobotStream(Stream):
    """Flat step arrays of every task: train.images = [N, S + 1] (state, return-to-go), train.labels = [N, A]
    action ids; ep_start[i] = index of the first step of step i's episode."""

    ep_start: Optional[torch.Tensor] = None
    opts: Optional[MetaWorldConfig] = None
    act_dim: int = 4
    envs: dict = field(default_factory=dict, repr=False)  # (task id, slot) -> (env, variations), built once

    def env(self, task_id: int, slot: int):
        """A cached environment of a task (building one costs 0.1-0.7 s; evaluation reuses them every phase)."""
        if (task_id, slot) not in self.envs:
            self.envs[task_id, slot] = make_env(self.tasks[task_id].name, self.opts.data_seed)
        return self.envs[task_id, slot]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(context, state dim, action dim): what the decision transformer is built for."""
        return self.opts.context, self.train.images.shape[1] - 1, self.act_dim

    def to(self, device: torch.device) -> "RobotStream":
        super().to(device)
        self.test = self.train  # one copy of the step arrays on the device
        self.ep_start = self.ep_start.to(device)
        return self

    def train_batch(self, base: torch.Tensor, task_ids: torch.Tensor,
                    task: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ending at steps `base`: x [B, K, S + 2 + A], targets [B, K, A] (ignored before the episode)."""
        k = self.opts.context
        rows = base[:, None] + torch.arange(1 - k, 1, device=base.device)  # [B, K]
        valid = rows >= self.ep_start[base][:, None]
        rows = torch.where(valid, rows, base[:, None])  # padding reads a real row, then is zeroed
        feats = self.train.images[rows] * valid[..., None]
        acts = self.train.labels[rows]
        x = torch.cat([feats, valid[..., None].float(), torch.where(valid[..., None], acts, -1).float()], dim=-1)
        return x, torch.where(valid[..., None], acts, IGNORE_ACTION)


def tokenise(actions: torch.Tensor, bins: int) -> torch.Tensor:
    return ((actions.clamp(-1, 1) + 1) / 2 * (bins - 1)).round().long()


def detokenise(ids: torch.Tensor, bins: int) -> torch.Tensor:
    return ids.float() / (bins - 1) * 2 - 1


def held_out(ep: np.ndarray, opts: MetaWorldConfig) -> torch.Tensor:
    """[N] bool: steps of the last `test_episodes` episodes with the lowest noise level (expert behaviour)."""
    clean = [e for e in range(opts.episodes) if opts.noise[e % len(opts.noise)] == min(opts.noise)]
    test = clean[len(clean) - opts.test_episodes:] if opts.test_episodes else []
    return torch.from_numpy(np.isin(ep, test))


def returns_to_go(rew: np.ndarray, ep: np.ndarray) -> np.ndarray:
    out = np.empty_like(rew)
    for e in np.unique(ep):  # one vectorised reverse cumsum per episode (a few dozen per task)
        sel = np.flatnonzero(ep == e)
        out[sel] = np.cumsum(rew[sel][::-1])[::-1]
    return out


@STREAMS.register("metaworld")
def metaworld_stream(cfg: ExperimentConfig) -> RobotStream:
    opts = check_metaworld(cfg)
    opts.progress_bar = opts.progress_bar and cfg.trainer.progress_bar  # one switch silences every bar
    names = TASK_LISTS[opts.tasks][: cfg.stream.n_tasks]
    feats, acts, starts, tasks, offset = [], [], [], [], 0
    for t, name in enumerate(names):
        d = load_or_generate(name, opts)
        n = len(d["rew"])
        rtg = returns_to_go(d["rew"], d["ep"]) / opts.rtg_scale
        feats.append(torch.from_numpy(np.concatenate([d["obs"], rtg[:, None]], axis=1)))
        acts.append(tokenise(torch.from_numpy(d["act"]), opts.bins))
        first = np.searchsorted(d["ep"], d["ep"], side="left")  # episodes are contiguous and in order
        starts.append(torch.from_numpy(first + offset))
        episode_returns = np.bincount(d["ep"], weights=d["rew"])
        held = held_out(d["ep"], opts)
        steps = torch.arange(offset, offset + n)
        tasks.append(Task(id=t, name=name, train_idx=steps[~held], test_idx=steps[held],
                          classes=[], meta={"target_rtg": float(episode_returns.max() / opts.rtg_scale),
                                            "scripted_success": float(d["success"].mean())}))
        offset += n
    train = ImageArrays(torch.cat(feats).float(), torch.cat(acts))
    # test_idx index the same flat arrays (held-out episodes): `test` is `train`, so windows gather alike
    return RobotStream(tasks=tasks, order=resolve_order(len(tasks), cfg.stream.order), train=train, test=train,
                       transform=BatchTransform((0.0,), (1.0,)), n_classes=opts.bins,
                       presentation=cfg.stream.presentation, scenario="domain_incremental", evaluator=opts.evaluator,
                       ep_start=torch.cat(starts), opts=opts, act_dim=train.labels.shape[1])


metaworld_stream.check = check_metaworld


# ---- evaluation on held-out episodes: how well the expert's actions are predicted -----------------------
@EVALUATORS.register("action_accuracy")
@torch.no_grad()
def action_accuracy(stream: RobotStream, learner, batch_size: int, rank: int, world: int, seed: int,
                    split: str = "test") -> list[float]:
    """Per task: the share of the held-out expert steps' action tokens predicted within one bin (1/32 of the
    action range at 64 bins), teacher-forced, at the last step of each window. Cheap (no simulator) and sensitive
    to forgetting where rollouts at CPU scale mostly fail; under DDP each rank scores a share."""
    counts = torch.zeros(len(stream.tasks), 2, dtype=torch.float64, device=learner.device)
    with in_mode(learner, False):
        for task in stream.tasks:
            idx = task.test_idx[rank::world]
            for start in range(0, idx.numel(), batch_size):
                base = idx[start:start + batch_size]
                x, y = stream.train_batch(base, torch.full_like(base, task.id))
                t = torch.full_like(base, task.id) if stream.task_aware else None
                pred = learner.logits(x, t)[:, :, -1].argmax(1)  # [B, A]
                counts[task.id, 0] += ((pred - y[:, -1]).abs() <= 1).sum()
                counts[task.id, 1] += y[:, -1].numel()
    counts = all_sum(counts)
    return (counts[:, 0] / counts[:, 1].clamp(min=1)).tolist()


# ---- evaluation by rollouts ---------------------------------------------------------------------------
@EVALUATORS.register("rollout")
@torch.no_grad()
def rollout_success(stream: RobotStream, learner, batch_size: int, rank: int, world: int, seed: int,
                    split: str = "test") -> list[float]:
    """Success rate per task: stream.opts.eval_episodes seeded episodes each (the same episodes at every
    evaluation), all tasks' environments stepped together. Under DDP each rank runs a share; counts are summed."""
    opts = stream.opts
    jobs = [(task.id, e) for task in stream.tasks for e in range(opts.eval_episodes)][rank::world]
    counts = torch.zeros(len(stream.tasks), 2, dtype=torch.float64, device=learner.device)
    if jobs:
        success = run_episodes(stream, learner, jobs, seed)
        for (task_id, _), s in zip(jobs, success):
            counts[task_id, 0] += s
            counts[task_id, 1] += 1
    counts = all_sum(counts)
    return (counts[:, 0] / counts[:, 1].clamp(min=1)).tolist()


def run_episodes(stream: RobotStream, learner, jobs: list[tuple[int, int]], seed: int) -> list[float]:
    """Roll out one episode per (task id, episode) job in parallel environments; 1.0 where it succeeded."""
    from tqdm import tqdm

    opts, device = stream.opts, learner.device
    envs, obs = [], []
    for task_id, e in jobs:
        env, variations = stream.env(task_id, e)
        pick = np.random.default_rng(derive_seed(seed, "rollout_goal", task_id, e)).integers(len(variations))
        env.set_task(variations[int(pick)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs.append(env.reset()[0])
        envs.append(env)
    n, k, s_dim, a_dim = len(jobs), opts.context, stream.input_shape[1], stream.act_dim
    window = torch.zeros(n, k, s_dim + 2 + a_dim, device=device)
    window[..., s_dim + 2:] = -1
    rtg = torch.tensor([stream.tasks[t].meta["target_rtg"] for t, _ in jobs], device=device)
    t_ids = torch.tensor([t for t, _ in jobs], device=device)
    success = np.zeros(n)
    steps = range(opts.max_steps)
    bar = tqdm(steps, desc="rollouts", leave=False, disable=not opts.progress_bar)
    with in_mode(learner, False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in bar:
            window = torch.roll(window, -1, dims=1)
            window[:, -1, :s_dim] = torch.as_tensor(np.stack(obs), dtype=torch.float32, device=device)
            window[:, -1, s_dim], window[:, -1, s_dim + 1] = rtg, 1.0
            t = t_ids if stream.task_aware else None
            ids = decode_actions(lambda x: learner.logits(x, t), window, s_dim, a_dim)
            window[:, -1, s_dim + 2:] = ids.float()
            actions = detokenise(ids, stream.n_classes).cpu().numpy()
            rewards = np.zeros(n, dtype=np.float32)
            for i, env in enumerate(envs):  # the simulator steps one environment at a time
                obs[i], rewards[i], _, _, info = env.step(actions[i])
                success[i] = max(success[i], float(info["success"]))
            rtg = rtg - torch.as_tensor(rewards, device=device) / opts.rtg_scale
    return success.tolist()
