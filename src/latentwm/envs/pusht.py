"""Push-T (gym-pusht) for data generation and planning: pixels, the full simulator state, exact reset to a state.

A thin wrapper over the real `gym_pusht/PushT-v0` (pymunk physics, pygame rendering, headless). What it adds:

- `state()`: DINO-WM's 7-D state [agent x, agent y, block x, block y, block angle, agent vx, agent vy] (pixels of the
  512×512 arena, angle wrapped to [0, 2π), velocities in px/s), taken from the simulator bodies.
- `reset(state=...)` that reproduces a saved state *exactly*. gym-pusht's `reset_to_state` sets the block position
  before its angle (legacy order), and pymunk rotates about the centre of gravity, so the block ends up elsewhere;
  it then steps the physics once, which pushes a block the agent touches. We pre-compensate the position so the
  env's own reset lands in the right place, then set the bodies exactly (angle first), restore the agent's velocity,
  zero the block's velocities (not part of the state) and re-render. The frame equals the one recorded at that state.
- `goal_reached` / `goal_metrics` / `state_distance`: DINO-WM's Push-T success test and a documented distance.

The env's own task signals are kept in `info`: `coverage` of the fixed green goal zone, `reward` (= coverage / 0.95,
clipped to 1) and `is_success` (coverage > 0.95).
"""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless pygame, before gym_pusht imports it
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import math  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

STATE_DIM = 7
ACTION_DIM = 2
FPS = 10.0
ARENA = 512.0
# DINO-WM's success thresholds (dino_wm env/pusht eval_state)
POS_TOL = 20.0
ANGLE_TOL = math.pi / 9


def angle_diff(a, b):
    """|a − b| wrapped to [0, π] (radians); broadcasts."""
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % (2 * math.pi)
    return np.minimum(d, 2 * math.pi - d)


def goal_metrics(state, goal_state) -> dict:
    """DINO-WM's Push-T evaluation of `state` against `goal_state` (7-D or 5-D state vectors).

    block_pos_diff / agent_pos_diff: Euclidean distances in arena pixels; angle_diff: wrapped block angle difference
    (radians); success: block within 20 px, block angle within π/9 and agent within 20 px of the goal's (each
    position on its own); success_joint: DINO-WM's own form, ‖Δ(agent x, y, block x, y)‖ < 20 and angle within π/9
    (the four coordinates together: stricter);
    state_dist: `state_distance`; dino_wm_state_dist: DINO-WM's ‖goal − state‖ over the vectors as given.
    """
    s, g = np.asarray(state, dtype=np.float64), np.asarray(goal_state, dtype=np.float64)
    agent = float(np.linalg.norm(s[:2] - g[:2]))
    block = float(np.linalg.norm(s[2:4] - g[2:4]))
    ang = float(angle_diff(s[4], g[4]))
    n = min(len(s), len(g))
    joint = float(np.linalg.norm(s[:4] - g[:4]))
    return dict(
        success=bool(block < POS_TOL and ang < ANGLE_TOL and agent < POS_TOL),
        success_joint=bool(joint < POS_TOL and ang < ANGLE_TOL),
        block_pos_diff=block,
        agent_pos_diff=agent,
        angle_diff=ang,
        state_dist=block + agent + math.degrees(ang),
        dino_wm_state_dist=float(np.linalg.norm(s[:n] - g[:n])),
    )


PROPRIO_INDEX = (0, 1, 5, 6)
"""Push-T proprio = agent [x, y, vx, vy]: these entries of the 7-D state."""


def proprio_from_state(state) -> np.ndarray:
    """(…, 7) Push-T states -> (…, 4) proprio (agent x, y, vx, vy), as the episodes record it."""
    return np.asarray(state)[..., list(PROPRIO_INDEX)].astype(np.float32)


def goal_reached(state, goal_state) -> bool:
    """DINO-WM's Push-T success: block position within 20 px, block angle within π/9 (wrapped), agent within 20 px."""
    return goal_metrics(state, goal_state)["success"]


def state_distance(state, goal_state) -> float:
    """block position distance (px) + agent position distance (px) + wrapped block angle difference in degrees.

    Degrees put the angle on the same scale as the success thresholds (π/9 = 20°, positions 20 px), so each term
    reads "how many success tolerances away", roughly. Velocities are ignored. 0 iff poses are equal.
    """
    return goal_metrics(state, goal_state)["state_dist"]


class PushTEnv:
    """gym-pusht with 7-D state, exact state resets and the DINO-WM success test.

    `reset(seed, state) -> (frame, info)`, `step(action) -> (frame, reward, terminated, truncated, info)`;
    frames are uint8 (image_size, image_size, 3); actions are agent target positions in [0, 512]² (clipped: the
    agent is kinematic and would pass through the walls). `info` has `state` (7,), `coverage`, `is_success`.
    """

    dataset = "pusht"
    fps = FPS
    action_dim = ACTION_DIM
    state_dim = STATE_DIM

    def __init__(self, image_size: int = 96, max_episode_steps: int | None = None):
        import gymnasium as gym

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

            self._env = gym.make(
                "gym_pusht/PushT-v0",
                obs_type="pixels_agent_pos",
                render_mode="rgb_array",
                observation_width=image_size,
                observation_height=image_size,
                max_episode_steps=max_episode_steps or 10**9,
                disable_env_checker=True,
            )
        self.image_size = image_size
        self._frame: np.ndarray | None = None
        self._last_info: dict = {}
        self._goal_geom: tuple | None = None  # (goal pose, its shapely polygons)

    @property
    def sim(self):
        """The underlying gym_pusht PushTEnv (pymunk bodies `agent`, `block`, `space`)."""
        return self._env.unwrapped

    # ------------------------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, state=None) -> tuple[np.ndarray, dict]:
        """Random start (the env's own distribution, seeded) or exactly `state` (5-D or 7-D)."""
        options = None
        if state is not None:
            state = np.asarray(state, dtype=np.float64)
            if state.shape not in ((5,), (7,)):
                raise ValueError(f"PushTEnv.reset: state must have 5 or 7 entries, got shape {state.shape}")
            options = {"reset_to_state": self._legacy_reset_state(state)}
        obs, info = self._env.reset(seed=seed, options=options)
        if state is not None:
            self._set_exact(state)
            obs = {"pixels": self._observe()}
        self._frame = obs["pixels"]
        coverage = self._coverage()
        self._last_info = self._info(coverage)
        return self._frame, dict(self._last_info)

    def step(self, action, render: bool = True) -> tuple[np.ndarray | None, float, bool, bool, dict]:
        """gym-pusht's step (PD control, pymunk physics, coverage reward, frame), with the same numbers and pixels
        (tested against it) at half its cost: the goal zone's geometry is built once per reset instead of every
        step, and the frame leaves the 512² drawing surface without a strided copy. render=False skips the frame
        (most of the remaining cost; the frame returned is None)."""
        self._simulate(np.asarray(action, dtype=np.float64).reshape(1, 2))
        coverage = self._coverage()
        sim = self.sim
        self._frame = self._observe() if render else None
        self._last_info = self._info(coverage)
        reward = float(np.clip(coverage / sim.success_threshold, 0.0, 1.0))
        return self._frame, reward, bool(coverage > sim.success_threshold), False, dict(self._last_info)

    def advance(self, actions, render: bool = True) -> np.ndarray | None:
        """Execute (k, 2) actions and return only the last frame: the same physics as k `step` calls without
        rendering or scoring the frames in between, which is most of a step's cost. For evaluating many candidate
        plans (planning/cost_quality.py). render False: no frame now (None; `frame()` renders it when asked)."""
        self._simulate(np.asarray(actions, dtype=np.float64).reshape(-1, 2))
        self._frame = self._observe() if render else None
        self._last_info = self._info(self._coverage())
        return self._frame

    def frame(self) -> np.ndarray:
        """The current observation, uint8 (image_size, image_size, 3) (rendered now if the last step skipped it)."""
        if self._frame is None:
            if not self._last_info:
                raise RuntimeError("PushTEnv.frame() before reset()")
            self._frame = self._observe()
        return self._frame

    def render(self, size: int = 256) -> np.ndarray:
        """A larger view of the current scene for videos, uint8 (size, size, 3)."""
        sim = self.sim
        return sim._get_img(sim._draw(), width=size, height=size, render_action=False)

    def state(self) -> np.ndarray:
        """[agent x, agent y, block x, block y, block angle ∈ [0, 2π), agent vx, agent vy] (float64)."""
        sim = self.sim
        ax, ay = sim.agent.position
        bx, by = sim.block.position
        vx, vy = sim.agent.velocity
        return np.array([ax, ay, bx, by, sim.block.angle % (2 * math.pi), vx, vy], dtype=np.float64)

    @property
    def goal_pose(self) -> np.ndarray:
        """The env's fixed green goal zone pose [x, y, angle] (what `coverage` measures)."""
        return np.asarray(self.sim.goal_pose, dtype=np.float64)

    goal_reached = staticmethod(goal_reached)
    goal_metrics = staticmethod(goal_metrics)
    state_distance = staticmethod(state_distance)

    def close(self) -> None:
        self._env.close()

    # ------------------------------------------------------------------------------------------------------------
    def _simulate(self, actions: np.ndarray) -> None:
        """gym-pusht's physics for each (2,) target in `actions` (k, 2): its PD control of the kinematic agent and
        pymunk steps at its dt, the target clipped to the arena (the agent would pass through the walls)."""
        sim = self.sim
        n_sub = int(1 / (sim.dt * sim.control_hz))
        for action in actions:
            a = np.clip(action, 0.0, ARENA)
            sim.n_contact_points = 0
            sim._last_action = a
            for _ in range(n_sub):
                acc = sim.k_p * (a - sim.agent.position) + sim.k_v * (-sim.agent.velocity)
                sim.agent.velocity += acc * sim.dt
                sim.space.step(sim.dt)

    def _coverage(self) -> float:
        """gym-pusht's coverage (area of the block inside the goal zone / the zone's area) with the zone's polygons
        built once: the zone never moves within an episode."""
        import shapely.geometry as sg

        sim = self.sim
        key = tuple(np.asarray(sim.goal_pose, dtype=np.float64).tolist())
        if self._goal_geom is None or self._goal_geom[0] != key:
            goal = sim.get_goal_pose_body(np.asarray(sim.goal_pose))
            self._goal_geom = (key, _shapely(goal, sim.block.shapes, sg))
        zone = self._goal_geom[1]
        return float(zone.intersection(_shapely(sim.block, sim.block.shapes, sg)).area / zone.area)

    def _observe(self) -> np.ndarray:
        """The observation gym-pusht renders (draw at 512², `cv2.resize` to image_size, INTER_LINEAR), read from
        the surface's 32-bit pixels as one contiguous view: copying pygame's strided 3-channel view cost twice
        the drawing itself."""
        import cv2
        import pygame

        sim = self.sim
        screen = sim._draw()
        order = _rgb_bytes(screen)
        if order is None:  # an unusual pixel format: gym-pusht's own path
            return sim._get_img(screen, width=self.image_size, height=self.image_size)
        pixels = pygame.surfarray.pixels2d(screen).T  # (H, W) uint32, C-contiguous: a view, no copy
        h, w = pixels.shape
        rgba = pixels.view(np.uint8).reshape(h, w, 4)
        small = cv2.resize(rgba, (self.image_size, self.image_size))
        del pixels, rgba  # release the surface lock
        return np.ascontiguousarray(small[..., list(order)])

    def _info(self, coverage: float) -> dict:
        state = self.state()
        return dict(
            state=state,
            agent_pos=state[:2].copy(),
            coverage=coverage,
            is_success=bool(coverage > self.sim.success_threshold),
        )

    def _legacy_reset_state(self, state: np.ndarray) -> list[float]:
        """The 5-D `reset_to_state` that gym-pusht's legacy order (position, then angle about the CoG) turns into
        the block pose `state[2:5]`: origin = p + c − R(θ)c  ⇒  p = origin − c + R(θ)c."""
        block = getattr(self.sim, "block", None)  # absent before the first reset; gym-pusht's tee has CoG (0, 45)
        cog = np.asarray(block.center_of_gravity if block is not None else (0.0, 45.0), dtype=np.float64)
        th = float(state[4])
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        p = state[2:4] - cog + rot @ cog
        return [float(state[0]), float(state[1]), float(p[0]), float(p[1]), th]

    def _set_exact(self, state: np.ndarray) -> None:
        sim = self.sim
        sim.agent.position = (float(state[0]), float(state[1]))
        sim.agent.velocity = (float(state[5]), float(state[6])) if len(state) == 7 else (0.0, 0.0)
        sim.block.angle = float(state[4])  # angle first: then the position is exact
        sim.block.position = (float(state[2]), float(state[3]))
        sim.block.velocity = (0.0, 0.0)
        sim.block.angular_velocity = 0.0
        for body in (sim.agent, sim.block):  # refresh shape caches (what rendering and collisions read)
            sim.space.reindex_shapes_for_body(body)


def _shapely(body, shapes, sg):
    """The shapely MultiPolygon of `body`'s polygon shapes in world coordinates (gym-pusht's pymunk_to_shapely)."""
    polys = []
    for shape in shapes:
        verts = [body.local_to_world(v) for v in shape.get_vertices()]
        polys.append(sg.Polygon(verts + [verts[0]]))
    return sg.MultiPolygon(polys)


def _rgb_bytes(surface) -> tuple[int, int, int] | None:
    """Byte offsets of R, G, B within a 32-bit pixel of `surface` (from its channel masks), or None when the surface
    is not 32-bit with byte-aligned 8-bit channels."""
    if surface.get_bitsize() != 32:
        return None
    import sys

    masks = surface.get_masks()[:3]
    out = []
    for m in masks:
        if m not in (0xFF, 0xFF00, 0xFF0000, 0xFF000000):
            return None
        byte = {0xFF: 0, 0xFF00: 1, 0xFF0000: 2, 0xFF000000: 3}[m]
        out.append(byte if sys.byteorder == "little" else 3 - byte)
    return tuple(out)
