"""BERT served: the three token features of each sequence in, the logits out."""

from __future__ import annotations

import numpy as np

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from data.synthetic import text_batch
from models.bert.config import BERT_BASE
from models.served import Arrays, Signature, Tensor, TorchServed, on_device

#: The features in the order the in-process paths feed them.
FEATURES = ("input_ids", "token_type_ids", "attention_mask")


class BertServed(TorchServed):
    def signature(self, spec: RunSpec) -> Signature:
        seq = (spec.seq_len,)
        return Signature(
            inputs=tuple(Tensor(n, np.int64, seq) for n in FEATURES),
            outputs=(Tensor("logits", np.float32, (BERT_BASE.num_labels,)),),
        )

    def sample_arrays(self, spec: RunSpec, count: int) -> Arrays:
        text = text_batch(
            count,
            spec.seq_len,
            vocab_size=BERT_BASE.vocab_size,
            num_labels=BERT_BASE.num_labels,
            seed=spec.seed,
        )
        return {n: getattr(text, n) for n in FEATURES}

    def stage(self, workload: Workload, inputs: Arrays) -> int:
        stage_arrays = getattr(workload, "stage_arrays", None)
        if stage_arrays is not None:
            stage_arrays(inputs)  # PyTorch: the mask's form is decided on the host
        else:
            library = {n: on_device(inputs[n], workload.spec.device) for n in FEATURES}
            workload.library = library  # type: ignore[attr-defined]
        return len(inputs["input_ids"])


SERVED = BertServed()
