"""Training on several processes with PyTorch's own engine: ``torchrun --nproc_per_node N -m graspcheck train``.

torchrun starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; each process
holds all decoded images, trains a DistributedDataParallel copy of the model on its shard of every epoch
(cut by torch's DistributedSampler), and evaluates its shard of the validation and test images. Results are
gathered so every rank holds the same history; only rank 0 writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process: the one that writes files and prints."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Group:
    """The processes of one training run; a single process is a group of one."""

    rank: int = 0
    size: int = 1
    created: bool = False  # this group was set up by graspcheck (and is taken down by it), not by the caller

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of an epoch's image order. DistributedSampler pads the order by repeating its
        start so that every rank takes the same number of optimizer steps."""
        if self.size == 1:
            return order
        positions = DistributedSampler(range(len(order)), num_replicas=self.size, rank=self.rank, shuffle=False)
        return order[list(positions)]

    def gather(self, value):
        """Every rank's value, in rank order, on every rank (any picklable object; gloo and NCCL alike)."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value):
        """Rank 0's value on every rank."""
        if self.size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def raise_together(self, outcome):
        """Rank 0's outcome (a value, or the error it raised) on every rank: an error there stops all ranks
        instead of leaving the others waiting for it."""
        outcome = self.broadcast(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.size > 1:
            dist.barrier()

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's BatchNorm statistics to all ranks, so every rank evaluates the model rank 0 saves."""
        if self.size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def join(device_type: str) -> Group:
    """Join the torchrun job this process belongs to (gloo on CPU, NCCL on CUDA), or a group of one."""
    if not launched_by_torchrun():
        return Group()
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), created)


def cuda_device_of_this_process() -> str:
    """Under torchrun each process drives the GPU of its local rank."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def leave(group: Group) -> None:
    if group.created and dist.is_initialized():
        dist.destroy_process_group()
