"""Simulated Push-T episodes (gym-pusht) from a scripted pushing policy and a smoothed random walk.

`generate_pusht(out_dir, num_episodes)` writes `episode_{i:06d}.npz` (see `latentwm.data.episodes.save_episode`):
dataset "pusht", camera "main", fps 10, frames (T, S, S, 3) uint8, actions (T, 2) float32 = the commanded agent
target position in [0, 512]² (the action at t is taken after frame t), proprio (T, 4) = agent [x, y, vx, vy],
rewards (T,) = the env's coverage reward of the step taken at t, states (T, 7) = DINO-WM's state
[agent x, y, block x, y, angle, agent vx, vy], success = the env's coverage success (> 95%) was reached,
extras = {seed, policy, block_travel, narrations, narrations_heldout}. An episode stops early when the env
reports success.

Language: `extras["narrations"]` = `[start, end, text]` spans of NARRATION_SEGMENT stored frames describing what
the frames show (the block moved / turned, or where the pusher went; `latentwm.envs.pusht_language.narrate` of
the states, paraphrases drawn from the episode's seed), `extras["narrations_heldout"]` = the same spans worded with
held-out paraphrases (evaluation only). `text` stays [] (the narrations are the text). Episodes written before
narrations existed get identical ones computed from their states when `load_pusht`'s loaders read them.

Episode i is a pure function of (seed + i, its policy), so generation is deterministic, resumable (existing files
that load are kept; corrupt or partial ones are regenerated) and can run on several processes. The settings are
recorded in `generate.json` in the folder: generating again with another max_steps, image_size, scripted_fraction
or seed is refused (a ConfigError naming the fields) instead of mixing episodes of two kinds; num_episodes may grow.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from latentwm.config import ConfigError, GenerateConfig
from latentwm.data.episodes import Episode, EpisodeError, load_episode, save_episode
from latentwm.envs.pusht import PushTEnv, proprio_from_state
from latentwm.envs.pusht_language import narrate

CAMERA = "main"
POLICIES = ("scripted", "random_walk")
ARENA_MAX = 512.0
NARRATION_SEGMENT = 20
"""Stored frames (env steps, 10 Hz) per narrated span: 2 s, 4 model steps at frame_skip 5 (a training clip of 8
model steps spans 2). A constant, not a folder setting: narrations are recomputed from the states of old folders."""


def episode_path(out_dir: str | os.PathLike, i: int) -> Path:
    return Path(out_dir) / f"episode_{i:06d}.npz"


def policy_for(i: int, seed: int, scripted_fraction: float) -> str:
    """Which policy drives episode i: a seeded, order-independent draw with P(scripted) = scripted_fraction."""
    u = np.random.default_rng([seed, i, 0x5EED]).random()
    return "scripted" if u < scripted_fraction else "random_walk"


class ScriptedPusher:
    """Pushes the block's centre of gravity toward a random target point, re-drawn when reached or stale.

    With d the direction from the block's CoG to its target: if the agent is behind the block on the push line it
    commands a point 40 px ahead along d (steering back onto the line); otherwise it travels around the block on a
    circle of safe radius (never cutting through it) to the pushing side, then closes in. Commands carry noise.
    """

    def __init__(self, rng: np.random.Generator, noise: float = 6.0, safe_radius: float = 100.0):
        self.rng, self.noise, self.safe = rng, noise, safe_radius
        self.goal: np.ndarray | None = None
        self.age = 0

    def _new_goal(self, cog: np.ndarray) -> None:
        for _ in range(20):  # far enough from the block to be worth a push
            g = self.rng.uniform(130.0, 382.0, size=2)
            if np.linalg.norm(g - cog) > 80.0:
                break
        self.goal, self.age = g, 0

    def __call__(self, state: np.ndarray) -> np.ndarray:
        agent, angle = state[:2], state[4]
        c, s = math.cos(angle), math.sin(angle)
        cog = state[2:4] + np.array([-45.0 * s, 45.0 * c])  # body origin + R(θ)·(0, 45)
        if self.goal is None or np.linalg.norm(self.goal - cog) < 25.0 or self.age > 80:
            self._new_goal(cog)
        self.age += 1
        d = self.goal - cog
        d /= max(np.linalg.norm(d), 1e-6)
        rel = agent - cog
        n = np.array([d[1], -d[0]])  # normal of the push line through the CoG
        off, behind = float(rel @ n), float(rel @ -d)  # signed distance from the line; > 0: on the pushing side
        if behind > 20.0 and abs(off) < 25.0:  # push through the CoG, steering back onto the line
            target = agent + 40.0 * d - 0.5 * off * n
        else:  # travel around the block at a safe radius toward the pushing side, then close in
            cur = math.atan2(rel[1], rel[0])
            delta = (math.atan2(-d[1], -d[0]) - cur + math.pi) % (2 * math.pi) - math.pi
            r = self.safe if abs(delta) > 0.6 else max(60.0, min(self.safe, float(np.linalg.norm(rel))) - 40.0)
            step = cur + float(np.clip(delta, -0.6, 0.6))
            target = cog + r * np.array([math.cos(step), math.sin(step)])
        target = target + self.rng.normal(0.0, self.noise, size=2)
        return np.clip(target, 15.0, ARENA_MAX - 15.0)


class RandomWalk:
    """Smoothed random walk of the target: v ← 0.85·v + N(0, σ²) (+ a weak pull toward the block), x ← x + v."""

    def __init__(self, rng: np.random.Generator, start: np.ndarray, sigma: float = 10.0, pull: float = 0.005):
        self.rng, self.sigma, self.pull = rng, sigma, pull
        self.x = np.asarray(start, dtype=np.float64).copy()
        self.v = np.zeros(2)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        self.v = 0.85 * self.v + self.rng.normal(0.0, self.sigma, size=2) + self.pull * (state[2:4] - self.x)
        nxt = self.x + self.v
        out = (nxt < 0.0) | (nxt > ARENA_MAX)
        self.v[out] *= -1.0  # bounce off the arena border
        self.x = np.clip(self.x + self.v, 0.0, ARENA_MAX)
        return self.x.copy()



def rollout_episode(env, index: int, seed: int, policy: str, max_steps: int) -> Episode:
    """One episode of `policy` from the env's seeded random start."""
    rng = np.random.default_rng([seed, index])
    frame, info = env.reset(seed=int(seed + index) % (2**31))
    state = info["state"]
    act = ScriptedPusher(rng) if policy == "scripted" else RandomWalk(rng, state[:2])
    frames, actions, states, rewards = [], [], [], []
    success = False
    for _ in range(max_steps):
        a = act(state)
        frames.append(frame)
        states.append(state)
        actions.append(a)
        frame, reward, terminated, _, info = env.step(a)
        state = info["state"]
        rewards.append(reward)
        success = success or info["is_success"]
        if terminated:
            break
    states_a = np.stack(states)
    travel = float(np.linalg.norm(np.diff(states_a[:, 2:4], axis=0), axis=1).sum()) if len(states) > 1 else 0.0
    return with_narrations(Episode(
        dataset="pusht", episode_id=f"episode_{index:06d}", fps=float(env.fps), frames={CAMERA: np.stack(frames)},
        actions=np.asarray(actions, dtype=np.float32), proprio=proprio_from_state(states_a),
        rewards=np.asarray(rewards, dtype=np.float32), states=states_a, success=bool(success),
        extras=dict(seed=int(seed + index), policy=policy, block_travel=travel),
    ))


def with_narrations(ep: Episode) -> Episode:
    """`ep` with `extras["narrations"]` / `["narrations_heldout"]` from its states (`narrate`, NARRATION_SEGMENT,
    paraphrases seeded by `extras["seed"]`) unless it has both already; episodes without states are returned as
    they are. Generation and loading both go through here, so old and new folders narrate alike."""
    if ep.states is None or ("narrations" in ep.extras and "narrations_heldout" in ep.extras):
        return ep
    train, held = narrate(ep.states, NARRATION_SEGMENT, seed=int(ep.extras.get("seed", 0)))
    ep.extras = dict(ep.extras, narrations=train, narrations_heldout=held)
    return ep


def _is_valid(path: Path) -> bool:
    try:
        load_episode(path)
        return True
    except EpisodeError:
        return False


def _generate_range(args: tuple) -> list[str]:
    """Worker: generate the given episode indices (files missing or broken), return their paths."""
    out_dir, indices, seed, scripted_fraction, max_steps, image_size = args
    env = PushTEnv(image_size=image_size)
    try:
        for i in indices:
            ep = rollout_episode(env, i, seed, policy_for(i, seed, scripted_fraction), max_steps)
            save_episode(ep, episode_path(out_dir, i))
    finally:
        env.close()
    return [str(episode_path(out_dir, i)) for i in indices]


SETTINGS_FILE = "generate.json"
MUST_MATCH = ("max_steps", "image_size", "scripted_fraction", "seed")
"""Settings every episode of one folder shares (num_episodes may differ between runs)."""


def folder_settings(out: Path) -> tuple[dict | None, str]:
    """(settings, where they come from) of an episode folder: its generate.json or, for folders written before it
    existed, what its first readable episode shows (image_size, seed); (None, "") for a folder without either."""
    f = out / SETTINGS_FILE
    if f.exists():
        try:
            return json.loads(f.read_text()), f"recorded in {f}"
        except (OSError, ValueError) as e:
            raise ConfigError(f"{f} is unreadable ({e}): delete it if {out} holds the episodes you ask for") from e
    for p in sorted(out.glob("episode_*.npz")):
        try:
            ep = load_episode(p)
        except EpisodeError:
            continue
        seen = {"image_size": int(ep.frames[CAMERA].shape[1])}
        if "seed" in ep.extras:
            seen["seed"] = int(ep.extras["seed"]) - int(p.stem.split("_")[-1])
        return seen, f"seen in {p.name}"
    return None, ""


def check_and_record_settings(out: Path, settings: dict) -> None:
    """Refuse (ConfigError naming the fields and the folder) to add episodes made with other MUST_MATCH settings
    than those already in `out`; else record the settings (num_episodes: the largest asked for) atomically."""
    have, source = folder_settings(out)
    have = have or {}
    diff = [k for k in MUST_MATCH if k in have and have[k] != settings[k]]
    if diff:
        what = "; ".join(f"{k} {have[k]} there, {settings[k]} now" for k in diff)
        raise ConfigError(f"{out} holds Push-T episodes generated with other settings ({what}; {source}): use "
                          f"another --out-dir, or the folder's settings to add episodes to it")
    record = {**settings, "num_episodes": max(int(settings["num_episodes"]), int(have.get("num_episodes", 0)))}
    tmp = out / f".{SETTINGS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / SETTINGS_FILE)


def generate_pusht(out_dir: str | os.PathLike, num_episodes: int, max_steps: int = 200, seed: int = 0,
                   scripted_fraction: float = 0.7, image_size: int = 96, show_progress: bool = True,
                   num_workers: int = 0) -> list[Path]:
    """Write episodes 0..num_episodes-1 to `out_dir` (skipping ones already there and readable); return all paths.

    num_workers > 1 spreads episodes over that many processes (same files as a single process). A folder made with
    another max_steps, image_size, scripted_fraction or seed is refused (ConfigError, nothing written).
    """
    if num_episodes < 0 or max_steps <= 0 or image_size <= 0:
        raise ValueError(f"generate_pusht: need num_episodes >= 0, max_steps > 0, image_size > 0; got "
                         f"{num_episodes}, {max_steps}, {image_size}")
    if not 0.0 <= scripted_fraction <= 1.0:
        raise ValueError(f"generate_pusht: scripted_fraction must be in [0, 1], got {scripted_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_and_record_settings(out, dict(num_episodes=num_episodes, max_steps=max_steps, image_size=image_size,
                                        scripted_fraction=scripted_fraction, seed=seed))
    for stale in out.glob(".episode_*.npz.*.tmp"):  # temp files of an interrupted save
        stale.unlink(missing_ok=True)
    todo = [i for i in range(num_episodes) if not (episode_path(out, i).exists() and _is_valid(episode_path(out, i)))]
    from tqdm.auto import tqdm

    bar = tqdm(total=num_episodes, initial=num_episodes - len(todo), desc="generate pusht", unit="ep",
               disable=not show_progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        if num_workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            chunks = [todo[k: k + 4] for k in range(0, len(todo), 4)]
            with mp.get_context("spawn").Pool(min(num_workers, len(chunks))) as pool:
                args = [(str(out), c, seed, scripted_fraction, max_steps, image_size) for c in chunks]
                for done in pool.imap_unordered(_generate_range, args):
                    bar.update(len(done))
        elif todo:
            env = PushTEnv(image_size=image_size)
            try:
                for i in todo:
                    ep = rollout_episode(env, i, seed, policy_for(i, seed, scripted_fraction), max_steps)
                    save_episode(ep, episode_path(out, i))
                    bar.update(1)
            finally:
                env.close()
    finally:
        bar.close()
    if todo and show_progress:
        dt = time.perf_counter() - t0
        print(f"generated {len(todo)} Push-T episodes in {dt:.1f} s ({len(todo) / max(dt, 1e-9):.1f} episodes/s)")
    return [episode_path(out, i) for i in range(num_episodes)]


def load_pusht(out_dir: str | os.PathLike) -> list[tuple[str, Callable[[], Episode]]]:
    """(key, loader) pairs for every episode file in `out_dir`, sorted: the input of `encode_to_cache`. Episodes
    saved without narrations get them from their states (`with_narrations`), as generation gives them."""
    paths = sorted(Path(out_dir).glob("episode_*.npz"))
    return [(f"pusht/{p.stem}", (lambda p=p: with_narrations(load_episode(p)))) for p in paths]


def run_generate(cfg: GenerateConfig) -> list[Path]:
    """`latentwm generate pusht`: simulate the episodes of cfg into cfg.out_dir (finished ones are kept)."""
    paths = generate_pusht(cfg.out_dir, num_episodes=cfg.num_episodes, max_steps=cfg.max_steps, seed=cfg.seed,
                           scripted_fraction=cfg.scripted_fraction, image_size=cfg.image_size)
    print(f"{len(paths)} episodes in {cfg.out_dir}")
    return paths
