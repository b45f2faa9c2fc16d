"""The null workload served: one number in, the same number out, after the null workload's
(empty) inference and, for tests, a fixed service time per batch (a sleeper)."""

from __future__ import annotations

import time

import numpy as np

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from models.served import Arrays, InferFn, ServedForm, Signature, Tensor

TENSOR = "x"


class NullServed(ServedForm):
    def signature(self, spec: RunSpec) -> Signature:
        return Signature(
            inputs=(Tensor(TENSOR, np.float32, (1,)),),
            outputs=(Tensor("y", np.float32, (1,)),),
        )

    def sample_arrays(self, spec: RunSpec, count: int) -> Arrays:
        return {TENSOR: np.arange(count, dtype=np.float32)[:, None]}

    def infer_fn(self, workload: Workload, service_s: float = 0.0) -> InferFn:
        def sleeper(inputs: Arrays) -> Arrays:
            x = inputs[TENSOR]
            workload.stage_samples(len(x))
            workload.infer_samples(range(len(x)))
            if service_s > 0:
                time.sleep(service_s)
            return {"y": x.astype(np.float32)}

        return sleeper


SERVED = NullServed()
