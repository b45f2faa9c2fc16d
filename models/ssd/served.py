"""SSD served: images in, the detections after the NMS out (the best ``POST_NMS`` per
image, padded with -1, as the in-process paths return them)."""

from __future__ import annotations

import numpy as np

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from data.synthetic import detection_batch
from models.served import Arrays, Signature, Tensor, TorchServed, on_device
from models.ssd.common import POST_NMS


class SsdServed(TorchServed):
    def signature(self, spec: RunSpec) -> Signature:
        size = spec.image_size
        return Signature(
            inputs=(Tensor("images", np.float32, (3, size, size)),),
            outputs=(
                Tensor("ids", np.int64, (POST_NMS,)),
                Tensor("scores", np.float32, (POST_NMS,)),
                Tensor("boxes", np.float32, (POST_NMS, 4)),
            ),
        )

    def sample_arrays(self, spec: RunSpec, count: int) -> Arrays:
        return {"images": detection_batch(count, spec.image_size, seed=spec.seed).images}

    def stage(self, workload: Workload, inputs: Arrays) -> int:
        workload.library = on_device(inputs["images"], workload.spec.device)  # type: ignore[attr-defined]
        return len(inputs["images"])


SERVED = SsdServed()
