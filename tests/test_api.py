"""The Python API (latentwm.api): the README's example runs as written on a tiny Push-T run laid out like the demo's,
and each call keeps its shape contract and refuses what it cannot use with a message naming the fix."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gym_pusht")

from latentwm.cli import main  # noqa: E402
from latentwm.config import ConfigError, GenerateConfig  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """runs/demo/{episodes,latents,train} as the demo writes them: every env step rendered, a smoke-preset model
    with proprio channels and relative actions, trained a few steps."""
    root = tmp_path_factory.mktemp("api")
    demo = root / "runs" / "demo"
    generate_pusht(
        GenerateConfig(out_dir=str(demo / "episodes"), num_episodes=6, max_steps=60, workers=1), show_progress=False
    )
    common = ["--preset", "smoke"]
    assert main(["encode", *common, "--root", str(demo / "episodes"), "--out-dir", str(demo / "latents"),
                 "--text.name", ""]) == 0  # fmt: skip
    assert main(["train", *common, "--data.cache-dir", str(demo / "latents"), "--train.out-dir", str(demo / "train"),
                 "--train.steps", "3", "--train.eval-every", "3", "--model.text-dim", "0"]) == 0  # fmt: skip
    return root


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("```python")[1].split("```")[0]


def test_the_readme_example_runs(demo_like):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _readme_example()], cwd=demo_like, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("error: ") and np.isfinite(float(lines[-2].split()[-1]))
    assert lines[-1].startswith("(") and lines[-1].endswith(", 2)")


def test_shapes_determinism_and_clear_errors(demo_like):
    import latentwm

    demo = demo_like / "runs" / "demo"
    wm = latentwm.load(demo / "train")
    ep = np.load(demo / "episodes" / "episode_000000.npz")
    fs = wm.frame_skip
    frames, proprio = ep["frames/main"][::fs], ep["proprio"][::fs]
    z = wm.encode(frames[:3], proprio[:3])
    n, f = z.shape[1:]
    assert z.shape == (3, n, f) and f == wm.latents_only(z).shape[-1] + wm.proprio_dim
    acts = wm.actions(ep["actions"][: 5 * fs], proprio[:5])
    assert acts.shape == (5, wm.model.cfg.action_dim)
    a = wm.rollout(z, horizon=3, actions=acts, seed=1)
    assert a.shape == (3, n, f) and torch.equal(a, wm.rollout(z, horizon=3, actions=acts, seed=1))
    assert wm.rollout(z, horizon=3, seed=1).shape == (3, n, f)  # action-free
    with pytest.raises(ConfigError, match="proprio"):
        wm.encode(frames[:3])
    with pytest.raises(ConfigError, match=r"C − 1 \+ H = 5"):
        wm.rollout(z, horizon=3, actions=acts[:4])
    with pytest.raises(ConfigError, match="relative to the agent"):
        wm.actions(ep["actions"][: 5 * fs])
    step = wm.plan(frames[:2], frames[8], proprio[:2], proprio[8], seed=3)
    assert step.shape[1] == 2 and len(step) % fs == 0
    np.testing.assert_array_equal(step, wm.plan(frames[:2], frames[8], proprio[:2], proprio[8], seed=3))
