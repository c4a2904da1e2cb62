import os

# Headless rendering (pygame in gym-pusht) and plotting, whatever the machine.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny_models import meaning_model_and_probe  # noqa: E402

from latentwm.config import GenerateConfig, get_preset  # noqa: E402
from latentwm.data.clip_sets import model_clip_options  # noqa: E402
from latentwm.data.clips import LatentClipDataset  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402
from latentwm.encoders.text import save_tiny_text_model  # noqa: E402

TEST_DEVICE = os.environ.get("LATENTWM_TEST_DEVICE", "cpu")
"""Where the device-agnostic tests (those taking the `device` fixture, marked `uses_device`) run:
`LATENTWM_TEST_DEVICE=cuda pytest -m "uses_device and not cpu_only" ...` runs them on the GPU (benchmarks/gpu_check.sh
does); tests that do not take the fixture stay on the CPU, and `cpu_only` ones are skipped off the CPU."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cpu_only: checks CPU-specific behaviour (fallbacks, CPU autocast); skipped when "
        "LATENTWM_TEST_DEVICE is not cpu",
    )
    config.addinivalue_line(
        "markers",
        "uses_device: set automatically on tests that take the `device` fixture (select them with -m uses_device)",
    )
    dev = torch.device(TEST_DEVICE)  # a bad name fails here, at start
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(
            f"LATENTWM_TEST_DEVICE={TEST_DEVICE!r} but torch sees no CUDA device (torch {torch.__version__})"
        )


def pytest_collection_modifyitems(config, items):
    on_cpu = torch.device(TEST_DEVICE).type == "cpu"
    skip = pytest.mark.skip(reason=f"cpu_only (LATENTWM_TEST_DEVICE={TEST_DEVICE})")
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.uses_device)
        if not on_cpu and "cpu_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    """The device of the device-agnostic tests (LATENTWM_TEST_DEVICE, default cpu)."""
    return torch.device(TEST_DEVICE)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny matmuls: two threads only add sync cost, and oversubscribe badly when other jobs share the 2 cores
    (`pytestmark = pytest.mark.usefixtures("one_thread")` in a module)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


E = 16  # the meaning check's text width (its tiny text model's hidden size)


@pytest.fixture(scope="module")
def meaning_setup(tmp_path_factory):
    """(model, probe, data) for the meaning check (test_text_meaning, test_pusht_magnitude): Push-T episodes with
    the default (direction-style) narrations encoded with a tiny text model, the eval clips of that cache, a
    text-conditioned tiny DynamicsModel and a StateProbe, both perturbed off their init so predictions depend on
    their inputs."""
    from latentwm.cli import main

    tmp = tmp_path_factory.mktemp("meaning")
    text = save_tiny_text_model(tmp / "text", hidden=E)
    generate_pusht(GenerateConfig(out_dir=str(tmp / "eps"), num_episodes=6, max_steps=60, seed=5), show_progress=False)
    args = ["encode", "--preset", "tiny", "--root", str(tmp / "eps"), "--out-dir", str(tmp / "cache")]
    assert main([*args, "--text.name", text]) == 0
    exp = get_preset("tiny").replace(model__text_dim=E, data__eval_fraction=0.5)
    data = LatentClipDataset(str(tmp / "cache"), 8, "eval", model_clip_options(exp))
    model, probe = meaning_model_and_probe(exp, data)
    return model, probe, data
