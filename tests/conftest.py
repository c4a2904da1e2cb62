import os

# Headless rendering (pygame in gym-pusht) and plotting, whatever the machine.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

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
