"""Data-parallel training under ``torchrun``: process group, device per rank, reductions.

``torchrun --nproc_per_node N -m cwsam_core.cli train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; each process then trains a ``DistributedDataParallel`` copy of the model on its own
random windows, gradients are averaged across processes at every step (NCCL on CUDA, gloo on CPU),
and only rank 0 writes files. Without those variables everything runs in one process, unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..engine.torch_runner import select_device


@dataclass
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # we started the process group, so we end it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and reports progress."""
        return self.rank == 0

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``values`` over all processes (float64 or int64 arrays)."""
        if not self.enabled:
            return values
        # gloo reduces CPU tensors, NCCL only CUDA ones.
        tensor = torch.from_numpy(np.ascontiguousarray(values)).to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device_name: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group if this process was started by it, else a one-process context.

    On CUDA each process takes the GPU of its ``LOCAL_RANK``; ``device_name`` is then only checked to
    be a CUDA device (or ``auto``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, select_device(device_name))
    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise RuntimeError(f"distributed training runs on CUDA (NCCL) or CPU (gloo), not on {device.type}")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
        owns = True
    return DistributedContext(dist.get_rank(), dist.get_world_size(), device, owns)
