"""The one process group: rank, world size and device of this process, under ``torchrun`` or not.

Training (``train``) and every logged run (certify, predict, attack, check-certificates through
``runs.logged.run_logged``) use ``ProcessGroup``; the CLI's ``--device`` goes through ``choose_device``,
the same rule, so a device chosen once can be handed on and is chosen again unchanged.

The device rule (``choose_device``), a pure function of the requested device, the torchrun
environment (``WORLD_SIZE``, ``LOCAL_RANK``) and the CUDA devices present:

* nothing requested: ``cuda`` where CUDA is available, else ``cpu``;
* ``cuda`` (no index) means the local rank's GPU, ``cuda:LOCAL_RANK`` (``cuda:0`` outside
  torchrun), so under torchrun each process of a node runs on its own GPU;
* ``cuda:k`` is honoured outside torchrun (WORLD_SIZE 1). Under torchrun (WORLD_SIZE > 1) it
  names one GPU for several processes: it is refused (ArgumentError naming ``device``) unless it
  is this process's own GPU, k == LOCAL_RANK (as when the device chosen by this rule is handed on,
  e.g. from the CLI to the library, or with one process per node);
* ``cpu`` (and any other device type) as given; a CUDA device where CUDA is not available, or
  a GPU index the machine does not have, is an ArgumentError naming ``device``.

The group (``WORLD_SIZE`` > 1): nccl when this process's device is CUDA (after
``torch.cuda.set_device``, which nccl's collectives need), gloo otherwise; a group that is
already running (started by the caller or by an enclosing ``train``) is used and left running.
With WORLD_SIZE 1 nothing is started and the collectives return their input.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
import torch.distributed as dist

from .validation import ArgumentError


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise ValueError(f"the environment variable {name}={env.get(name)!r} is not an integer") from None


def choose_device(device: str | torch.device | None = None, env: Mapping[str, str] | None = None) -> torch.device:
    """The device of this process for the requested ``device`` (module doc: the device rule),
    from ``env`` (default ``os.environ``: WORLD_SIZE, LOCAL_RANK) and the CUDA devices present."""
    env = os.environ if env is None else env
    world, local_rank = _env_int(env, "WORLD_SIZE", 1), _env_int(env, "LOCAL_RANK", 0)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ArgumentError("device", f"device: unknown device {device!r}") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ArgumentError("device", "device: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if dev.index is None:
        if local_rank >= count:
            raise ArgumentError("device", f"device: this process (LOCAL_RANK {local_rank}) would run on "
                                          f"cuda:{local_rank}, but this machine has {count} GPU(s); start at most "
                                          f"{count} processes per node")
        return torch.device("cuda", local_rank)
    if world > 1 and dev.index != local_rank:
        raise ArgumentError("device", f"device: cuda:{dev.index} is one GPU for the {world} processes torchrun "
                                      f"started; each process runs on its own GPU, cuda:LOCAL_RANK (this one: "
                                      f"cuda:{local_rank}): give cuda, or leave the device out")
    if dev.index >= count:
        raise ArgumentError("device", f"device: cuda:{dev.index} does not exist, this machine has {count} GPU(s)")
    return dev


class ProcessGroup:
    """This process's rank, world size, local rank and device (``choose_device``), and the process
    group under torchrun (module doc): collectives that are no-ops for a single process, and
    ``close`` to end the group if this object started it. Also a context manager."""

    def __init__(self, device: str | torch.device | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.world = _env_int(env, "WORLD_SIZE", 1)
        self.rank = _env_int(env, "RANK", 0)
        self.local_rank = _env_int(env, "LOCAL_RANK", 0)
        self.device = choose_device(device, env)
        self.started = False
        if self.world > 1:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self.started = True

    @property
    def active(self) -> bool:
        """Whether there are several processes (WORLD_SIZE > 1)."""
        return self.world > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        box: list[Any] = [None] * self.world
        dist.all_gather_object(box, obj)
        return box

    def all_reduce(self, t: torch.Tensor, op: Any = None) -> torch.Tensor:
        """``t`` reduced in place over the ranks (default: summed); returns ``t``."""
        if self.active:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.active:
            if dist.get_backend() == "nccl" and self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        """End the process group if this object started it."""
        if self.started and dist.is_initialized():
            dist.destroy_process_group()
        self.started = False

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["ProcessGroup", "choose_device"]
