"""A lower bound on the memory a training run needs, checked before anything is allocated.

A config that cannot fit (`--data.batch-size 1000000000`, `--model.width 1000000`) used to grow until the kernel
killed the process a minute later with no message, or stop in an allocation traceback. The bound counts what any
run must hold at once — fp32 weights, gradients, AdamW's two moments and the EMA (20 bytes per parameter) and, per
token of one micro-batch and per layer, 8 width-wide activations at 2 bytes (fewer than the backward pass really
keeps: q, k, v, attention output, the MLP's inputs, the norms) — so it never refuses a run that fits. Measured for
calibration (benchmarks/RESULTS.md): the `small` preset at batch 32 peaked at 15.4 GB on a GPU, the bound says
5.6 GB; the `cpu` preset at batch 16 peaked at 1.8 GB, the bound says 0.2 GB.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentwm.config import ConfigError, ExperimentConfig
from latentwm.model.dynamics import approx_param_count
from latentwm.model.layout import TokenLayout

BYTES_PER_PARAM = 20
ACTIVATIONS_PER_TOKEN_LAYER = 8
ACTIVATION_BYTES = 2


def memory_lower_bound(cfg: ExperimentConfig, world_size: int = 1) -> int:
    """Bytes one rank needs at least: parameter state (sharded across ranks under FSDP) + one micro-batch's
    activations."""
    m, d, t = cfg.model, cfg.data, cfg.train
    params = approx_param_count(m) * BYTES_PER_PARAM
    if t.distributed == "fsdp":
        params //= max(1, world_size)
    clips = max(1, d.batch_size // max(1, t.grad_accum) // max(1, world_size))
    tokens = clips * d.clip_len * TokenLayout.from_config(m).tokens_per_frame
    return params + tokens * m.width * m.depth * ACTIVATIONS_PER_TOKEN_LAYER * ACTIVATION_BYTES


def available_memory(device: torch.device) -> int | None:
    """Bytes the run can use: the GPU's total memory, or the host's MemAvailable (None where unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(cfg: ExperimentConfig, device: torch.device, world_size: int = 1) -> None:
    """ConfigError when even the lower bound exceeds what the device has, naming the estimate and the fix."""
    need, have = memory_lower_bound(cfg, world_size), available_memory(device)
    if have is None or need <= have:
        return
    raise ConfigError(
        f"train: this config needs at least {need / 2**30:,.1f} GiB per rank "
        f"({approx_param_count(cfg.model):,} parameters; data.batch_size {cfg.data.batch_size} clips "
        f"of {cfg.data.clip_len} frames), "
        f"more than the {have / 2**30:,.1f} GiB available on {device}: lower data.batch_size (or raise "
        "train.grad_accum), model.width or model.depth"
    )


__all__ = ["available_memory", "check_memory", "memory_lower_bound"]
