"""Data-parallel training under ``torchrun`` (PyTorch DDP): one mechanism for every trainer.

    torchrun --standalone --nproc-per-node=2 -m domains.medical.train ...          # one machine
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-endpoint=HEAD:29400 -m domains.medical.train ...

Without torchrun (``WORLD_SIZE`` unset or 1) everything here is a no-op and training runs as one
process. Under torchrun:

* each rank holds a model replica (``DistributedDataParallel`` broadcasts rank 0's weights when it
  wraps the model) and draws its own batches — :class:`~core.runs.Run` seeds every rank with
  ``seed + rank`` — so a step sees ``world_size`` times the batch, and gradients are averaged;
* rank 0 alone writes: the run directory, metrics, checkpoints, MLflow. The other ranks open the
  same run as *followers* (same directory, nothing written; with ``--resume`` they read the same
  checkpoint), see :attr:`core.runs.Run.is_main`;
* decisions taken on rank 0 (validation, early stopping) reach the others by :meth:`DataParallel.broadcast`.

Backend: NCCL on CUDA, Gloo on CPU.

``DataParallel(process_group=True)`` also creates a one-process group (gloo/nccl on a free local
port) when not launched by torchrun: TorchRec's ``DistributedModelParallel`` needs a process group
even at world size 1 (``domains/recommendation/distributed.py``). The group is destroyed on exit only
if this object created it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["world", "DataParallel", "unwrap", "free_port"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a single-machine rendezvous (``torchrun --master_port=0`` is
    not one: its workers then hang at rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP (or ``nn.DataParallel``) wrapper: what is saved, validated and exported."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class DataParallel:
    """The process group of a torchrun launch (or a single process). Create it before
    :meth:`core.runs.Run.start`; use as a context manager so the group is torn down on exit."""

    def __init__(self, device: str = "auto", timeout_s: float = 1800.0, process_group: bool = False):
        self.rank, self.world_size, self.local_rank = world()
        self.enabled = self.world_size > 1
        self.created = False  # True when this object initialised the process group (and so tears it down)
        if dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            self.enabled = self.world_size > 1
            return
        if not self.enabled and not process_group:
            return
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(self.local_rank)  # "cuda" then means this rank's GPU
        backend = "nccl" if cuda else "gloo"
        if self.enabled:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        else:  # one process without torchrun: a private rendezvous on a free local port
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ["MASTER_PORT"] = str(free_port())
            dist.init_process_group(backend, rank=0, world_size=1, timeout=timedelta(seconds=timeout_s))
        self.created = True

    @property
    def has_group(self) -> bool:
        """A process group exists (torchrun, ``process_group=True`` or created elsewhere)."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __enter__(self) -> "DataParallel":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        if self.created and dist.is_initialized():
            dist.destroy_process_group()
        self.created = False

    def barrier(self) -> None:
        if self.has_group:
            dist.barrier()

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """``model`` in DDP (weights synchronised from rank 0 now, gradients averaged every step)."""
        if not self.enabled:
            return model
        dev = next(model.parameters()).device
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def mean(self, value: float) -> float:
        """The mean of a per-rank number over all ranks (every rank must call it)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (every rank must call it; a picklable value *we* made,
        never user data)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
