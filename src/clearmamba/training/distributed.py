"""Distributed data parallel with plain ``torch.distributed`` (launch with ``torchrun``).

``torchrun --nproc_per_node=2 -m clearmamba.cli.main train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
the same code then runs one process per GPU (NCCL) or per CPU worker (gloo). Without those variables
everything is a no-op and training runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls) -> DistributedContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and os.environ.get("CLEARMAMBA_DDP_BACKEND", "") != "gloo"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
        if use_cuda:
            torch.cuda.set_device(local_rank)
        device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        return cls(rank, world_size, local_rank, device)

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
