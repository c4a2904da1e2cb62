"""Crafted Push-T states for the language tests (test_pusht_language, test_pusht_magnitude): `state_at` puts the
T block's centre of gravity and angle (and the pusher) where a test wants them, `states_for` gives two states that
`describe_segment` turns into a given sentence template and slots.

Not a test module (no test_ prefix, no test functions): pytest does not collect it.
"""

import math

import numpy as np

from latentwm.envs import pusht_language as L


def state_at(agent=(60.0, 60.0), cog=(256.0, 300.0), angle=0.0):
    """A 7-D state whose block centre of gravity is at `cog` (arena px) with the given angle."""
    c, s = math.cos(angle), math.sin(angle)
    gx, gy = L.TEE_COG
    pos = np.array(cog) - np.array([c * gx - s * gy, s * gx + c * gy])
    return np.array([*agent, *pos, angle % (2 * math.pi), 0.0, 0.0])


def states_for(tid, slots):
    """Two states that `describe_segment` turns into (tid, slots)."""
    k = L.DIRECTIONS.index(slots.get("direction", "right"))
    d = 30.0 * np.array([math.cos(k * math.pi / 4), -math.sin(k * math.pi / 4)])
    turn = {"clockwise": 0.4, "counterclockwise": -0.4}.get(slots.get("sense"), 0.0)
    a0, c0 = np.array([80.0, 80.0]), np.array([256.0, 300.0])
    if tid.startswith("block"):
        return state_at(agent=a0, cog=c0), state_at(agent=a0, cog=c0 + (d if "move" in tid else 0), angle=turn)
    return state_at(agent=a0, cog=c0), state_at(agent=a0 + (d if tid == "pusher_move" else 0), cog=c0)
