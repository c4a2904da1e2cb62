"""Scripted Push-T policies that generate training data: pushing toward the green goal zone with noise (as DINO-WM's
noisy replays of expert pushes), pushing toward random targets, and a smoothed random walk.

Each policy is called with the 7-D state ([agent x, y, block x, y, angle, agent vx, vy], `envs/pusht.py`) and
returns the next commanded agent target (2,) in arena pixels. A policy owns its generator: an episode is a pure
function of the env's seed and the policy's generator.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

ARENA_MAX = 512.0
GOAL_POSE = np.array([256.0, 256.0, math.pi / 4])
"""gym-pusht's fixed green zone: block origin (x, y) and angle."""
COG_OFFSET = 45.0
"""The T block's centre of gravity in its body frame is (0, 45): the eye's notion of where the block is."""
POLICIES = ("goal", "scripted", "random_walk")


def block_cog(pose) -> np.ndarray:
    """World centre of gravity of a block at pose (x, y, angle): origin + R(angle)·(0, 45)."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return np.array([pose[0] - COG_OFFSET * s, pose[1] + COG_OFFSET * c])


def wrap(angle: float) -> float:
    """angle wrapped to (−π, π]."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


class LinePusher(ABC):
    """Pushes the block along a push line (a point on or in the block and a direction) given by `push_line`.

    If the agent is behind the point on the line it commands a point 40 px ahead along it (steering back onto the
    line); otherwise it travels around the block's centre on a circle of safe radius (never cutting through the
    block) to the pushing side, then closes in. Commands carry Gaussian noise of `noise` px.
    """

    def __init__(self, rng: np.random.Generator, noise: float = 6.0, safe_radius: float = 100.0):
        self.rng, self.noise, self.safe = rng, noise, safe_radius

    @abstractmethod
    def push_line(self, state: np.ndarray, cog: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(point (2,), unit direction (2,)) to push along, or None to hold back (command the agent's position)."""

    def __call__(self, state: np.ndarray) -> np.ndarray:
        agent = state[:2]
        cog = block_cog(state[2:5])
        line = self.push_line(state, cog)
        if line is None:
            target = agent.copy()
        else:
            point, d = line
            rel = agent - point
            n = np.array([d[1], -d[0]])  # normal of the push line
            off, behind = float(rel @ n), float(rel @ -d)  # signed distance from the line; > 0: on the pushing side
            if behind > 20.0 and abs(off) < 25.0:  # push, steering back onto the line
                target = agent + 40.0 * d - 0.5 * off * n
            else:  # around the block at a safe radius toward the pushing side, then close in
                around = agent - cog
                side = point - 60.0 * d - cog  # where the agent should be, seen from the centre
                cur = math.atan2(around[1], around[0])
                delta = wrap(math.atan2(side[1], side[0]) - cur)
                r = self.safe if abs(delta) > 0.6 else max(60.0, min(self.safe, float(np.linalg.norm(around))) - 40.0)
                step = cur + float(np.clip(delta, -0.6, 0.6))
                target = cog + r * np.array([math.cos(step), math.sin(step)])
        target = target + self.rng.normal(0.0, self.noise, size=2)
        return np.clip(target, 15.0, ARENA_MAX - 15.0)


class ScriptedPusher(LinePusher):
    """Pushes the block's centre of gravity toward a random target point, re-drawn when reached or stale (80
    steps): block motion in every direction, never aimed at the goal zone."""

    def __init__(self, rng: np.random.Generator, noise: float = 6.0, safe_radius: float = 100.0):
        super().__init__(rng, noise, safe_radius)
        self.goal: np.ndarray | None = None
        self.age = 0

    def push_line(self, state, cog):
        if self.goal is None or np.linalg.norm(self.goal - cog) < 25.0 or self.age > 80:
            for _ in range(20):  # far enough from the block to be worth a push
                g = self.rng.uniform(130.0, 382.0, size=2)
                if np.linalg.norm(g - cog) > 80.0:
                    break
            self.goal, self.age = g, 0
        self.age += 1
        d = self.goal - cog
        return cog, d / max(np.linalg.norm(d), 1e-6)


class GoalPusher(LinePusher):
    """Drives the block toward the green zone's pose, as a noisy expert would: of three keypoints of the T (both
    ends of the bar, the tip of the stem) it takes the one farthest from where the zone puts it and pushes at it
    along its error (a push off the centre turns the block as well as moving it, toward that keypoint's place),
    keeping a keypoint for up to 30 steps; it holds still once every keypoint is within 8 px. Over 300 steps from
    gym-pusht's random starts it ends with a mean coverage of 0.42 (12 starts, noise 3–25 px), against ≈ 0.1 for
    the random-target pusher: goal-directed, not an expert. Noise: `noise` px on every command (the episode's noise
    level) and a goal pose jittered per episode (position by N(0, goal_jitter²) px, angle by
    N(0, (goal_jitter / 2)²) degrees), so no two episodes aim at exactly the same pose."""

    KEYPOINTS = np.array([[-60.0, 15.0], [60.0, 15.0], [0.0, 115.0]])
    """Body-frame points: the bar's ends and the stem's tip (the bar spans x ∈ [−60, 60], y ∈ [0, 30]; the stem
    x ∈ [−15, 15], y ∈ [30, 120])."""

    def __init__(self, rng: np.random.Generator, noise: float = 6.0, goal_jitter: float = 10.0):
        super().__init__(rng, noise)
        pose = GOAL_POSE + np.r_[rng.normal(0.0, goal_jitter, size=2), math.radians(rng.normal(0.0, goal_jitter / 2))]
        self.goal_pose = pose
        self.goal_points = keypoints(pose, self.KEYPOINTS)
        self.current: int | None = None
        self.age = 0

    def push_line(self, state, cog):
        points = keypoints(state[2:5], self.KEYPOINTS)
        err = self.goal_points - points
        dist = np.linalg.norm(err, axis=1)
        if dist.max() < 8.0:
            return None
        if self.current is None or self.age > 30 or dist[self.current] < 8.0:
            self.current, self.age = int(np.argmax(dist)), 0
        self.age += 1
        k = self.current
        return points[k], err[k] / dist[k]


def keypoints(pose, points: np.ndarray) -> np.ndarray:
    """Body-frame `points` (K, 2) of a block at pose (x, y, angle) in world coordinates (K, 2)."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return points @ np.array([[c, s], [-s, c]]) + np.asarray(pose[:2], dtype=np.float64)


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


def make_policy(name: str, rng: np.random.Generator, state: np.ndarray, noise: float):
    """The policy `name` (one of POLICIES) for an episode starting at `state`, with command noise `noise` px (the
    random walk has its own step noise)."""
    if name == "goal":
        return GoalPusher(rng, noise=noise)
    if name == "scripted":
        return ScriptedPusher(rng, noise=noise)
    if name == "random_walk":
        return RandomWalk(rng, state[:2])
    raise ValueError(f"unknown Push-T policy {name!r}; expected one of {', '.join(POLICIES)}")


__all__ = [
    "GOAL_POSE",
    "POLICIES",
    "GoalPusher",
    "RandomWalk",
    "ScriptedPusher",
    "block_cog",
    "keypoints",
    "make_policy",
]
