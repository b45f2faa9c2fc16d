"""Data-parallel PyTorch for runs on several devices (``spec.gpus``): the process group of the
ranks torchrun started, DistributedDataParallel, and the share of a training step that
gradient communication adds.

NCCL between GPUs, gloo between CPU ranks. Collectives time out (``COLLECTIVE_TIMEOUT_S``)
so that a rank whose peer died raises instead of waiting forever; torchrun stops the other
ranks as soon as one exits anyway.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bench.run.distributed import rank_env

#: How long a collective may wait for its peers before it raises.
COLLECTIVE_TIMEOUT_S = 120.0
#: DistributedDataParallel's gradient bucket size (its default), in MiB.
BUCKET_CAP_MB = 25.0
#: Steps timed with and without gradient synchronization for the communication share.
COMM_STEPS = 3


class Ranks:
    """This process's place among the ranks, and the group they share."""

    def __init__(self, device: torch.device, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> None:
        env = rank_env(os.environ)
        if env is None:
            raise RuntimeError(
                "a run on several devices is started by torchrun (bench run --gpus N does "
                "that): RANK and WORLD_SIZE are not set"
            )
        self.rank, self.world_size, self.device = env.rank, env.world_size, device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            kwargs: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)}
            if device.type == "cuda":
                kwargs["device_id"] = device
            dist.init_process_group(self.backend, **kwargs)
        #: Where the ranks exchange host-side decisions: the default group on gloo; a gloo
        #: group beside NCCL's on GPUs, so that no decision waits for the device.
        self.host_group = (
            None
            if self.backend == "gloo"
            else dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        )
        self.comm: dict[str, Any] = {}

    def wrap(self, module: torch.nn.Module) -> DistributedDataParallel:
        """``module`` under DDP: gradients all-reduced in buckets during the backward."""
        return DistributedDataParallel(
            module,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            bucket_cap_mb=BUCKET_CAP_MB,
            gradient_as_bucket_view=True,
        )

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def rank_0_says(self, mine: bool) -> bool:
        """Rank 0's ``mine`` on every rank (a one-byte broadcast on the host): the ranks stop
        a duration-bound window after the same step."""
        flag = torch.tensor([int(mine)], dtype=torch.uint8)
        dist.broadcast(flag, src=0, group=self.host_group)
        return bool(flag.item())

    def facts(self, ddp: DistributedDataParallel | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "world_size": self.world_size,
            "rank": self.rank,
            "process_group": self.backend,
            "launcher": "torchrun",
            "collective_timeout_s": COLLECTIVE_TIMEOUT_S,
            "duration_end": "rank 0's clock, broadcast to every rank after each step",
        }
        if ddp is not None:
            out.update(
                wrapper="DistributedDataParallel",
                bucket_cap_mb=BUCKET_CAP_MB,
                gradient_as_bucket_view=ddp.gradient_as_bucket_view,
                find_unused_parameters=ddp.find_unused_parameters,
                static_graph=ddp.static_graph,
            )
        return {**out, **self.comm}

    def record_parameters(self, ddp: DistributedDataParallel) -> None:
        """A float64 sum of every parameter after the window: equal on every rank when the
        ranks' updates stayed in step (each rank keeps its own in its record)."""
        with torch.no_grad():
            total = sum(p.detach().double().sum() for p in ddp.module.parameters())
        self.comm["parameter_sum"] = float(total)

    def measure_comm_share(
        self,
        ddp: DistributedDataParallel,
        step: Callable[[], Any],
        sync: Callable[[], None],
        steps: int = COMM_STEPS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Time ``steps`` training steps with gradient synchronization and ``steps`` without
        (``no_sync``: the all-reduce is skipped); the share of a synchronized step that the
        communication adds is what overlapping with the backward could not hide."""
        with_sync = _timed(step, sync, steps, clock, contextlib.nullcontext)
        without = _timed(step, sync, steps, clock, ddp.no_sync)
        # without the all-reduce each rank stepped on its own gradients: make them equal again
        with torch.no_grad():
            for tensor in [*ddp.module.parameters(), *ddp.module.buffers()]:
                dist.broadcast(tensor, src=0)
        self.comm = {
            **self.comm,
            "comm_steps": steps,
            "step_s_with_grad_sync": with_sync,
            "step_s_without_grad_sync": without,
            "comm_share": comm_share(with_sync, without),
        }

    def close(self) -> None:
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def comm_share(step_s_with_sync: float, step_s_without_sync: float) -> float:
    """The share of a synchronized step spent in communication it could not overlap:
    1 - (without / with), 0 when skipping the all-reduce saved nothing."""
    if step_s_with_sync <= 0:
        raise ValueError("a step takes a positive time")
    return max(0.0, 1.0 - step_s_without_sync / step_s_with_sync)


def _timed(
    step: Callable[[], Any],
    sync: Callable[[], None],
    steps: int,
    clock: Callable[[], float],
    context: Callable[[], contextlib.AbstractContextManager[Any]],
) -> float:
    """Seconds per step of ``steps`` steps run inside ``context``, one sync at each end."""
    sync()
    start = clock()
    for _ in range(steps):
        with context():
            step()
    sync()
    return (clock() - start) / steps
