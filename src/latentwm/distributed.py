"""Process groups and model wrapping on PyTorch's own engines: DDP by default, FSDP2 `fully_shard` for big models.

Launch with `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT) or under SLURM `srun`
(SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID; MASTER_ADDR must be exported by the job script, e.g. the first host of
`scontrol show hostnames $SLURM_JOB_NODELIST`). A plain `python` run is a world of one with no process group.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
            t /= self.world_size
        return t

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t


def _env_int(*names: str, default: int) -> int:
    for n in names:
        if n in os.environ:
            return int(os.environ[n])
    return default


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (torchrun or SLURM) and pick this rank's device."""
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu" if device == "auto" else device)
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not tdist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError(
                "distributed run (world size > 1) without MASTER_ADDR: launch with torchrun, or "
                "export MASTER_ADDR/MASTER_PORT in the SLURM job script"
            )
        os.environ.setdefault("MASTER_PORT", "29500")
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def shutdown(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        # On a clean exit every rank meets here before any tears its group down: a gloo rank destroyed while a peer
        # still has its pair open aborts the peer at exit ("terminate called without an active exception"). When an
        # exception is on its way out (called from a `finally`), a barrier would wait for ranks that may never come.
        if sys.exc_info()[0] is None:
            tdist.barrier()
            _all_arrived(info)
        tdist.destroy_process_group()


def _all_arrived(info: DistInfo) -> None:
    """Every rank has come back from the barrier before any closes its pairs. The barrier alone is not enough: a rank
    returns from it once its peers' messages reached it, and may destroy its group while a peer still reads the
    barrier's last message, which aborts that peer (exit -6, seen in CI after the barrier was added). The default
    store (TCP, its own connections, outside the group's pairs) takes one key per rank and each rank waits for all."""
    store = tdist.distributed_c10d._get_default_store()
    store.set(f"latentwm/shutdown/{info.rank}", "1")
    store.wait([f"latentwm/shutdown/{r}" for r in range(info.world_size)])


def wrap_model(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """DDP, or FSDP2 (each transformer block sharded, then the root) — identity for a single process."""
    if not info.enabled:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        stack = getattr(model, "transformer", model)
        blocks = model.repeated_blocks() if hasattr(model, "repeated_blocks") else getattr(stack, "blocks", [])
        for block in blocks:  # one all-gather per block keeps peak memory at one block
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"train.distributed must be 'ddp' or 'fsdp', got {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
