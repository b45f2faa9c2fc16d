"""Two data-parallel ranks of unequal speed through the worker, for tests/test_ddp.py:
``python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.uneven_ranks
TIMING RESULT.json``. Each rank writes its record beside RESULT.json."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.run import registry
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.schema.spec import RunSpec
from models.torch_common import TorchWorkload

#: Rank 1's host waits this long after each of its steps (rank 0's does not): each rank's
#: own clock would end a duration on a different step.
SLOW_S = 0.05
#: The measured window.
DURATION_S = 1.0


class UnevenWorkload(TorchWorkload):
    """One linear layer trained data-parallel (an all-reduce per step); rank 1 is slower."""

    step_description = "linear layer, DDP; rank 1 sleeps after each step"

    def setup(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(8, 1)
        self.forward = self.compile_module(self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.inputs = torch.randn(4, 8, generator=torch.Generator().manual_seed(self.data_seed))
        self.prepare_execution()

    def graph_body(self) -> torch.Tensor:
        loss = self.forward(self.inputs).square().mean()
        self.backward_and_step(loss, self.optimizer)
        return loss.detach()

    def finish_step(self, out: Any) -> Any:
        if self.rank_and_size[0] == 1:
            time.sleep(SLOW_S)
        return out


def main(timing: str, result: Path) -> int:
    entries = dict(registry.REGISTRY)
    entries[("ssd", "torch")] = Entry("tests.uneven_ranks:UnevenWorkload", multi_device="torchrun")
    registry.REGISTRY = entries
    spec = RunSpec(
        workload="ssd",
        mode="train",
        batch=4,
        device="cpu",
        gpus=2,
        warmup=1,
        iters=None,
        duration_s=DURATION_S,
        timing=timing,
    )
    record = execute(spec, progress=False, telemetry_interval_s=None, checkpoint=result)
    return 0 if record.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
