"""BERT-base question answering through ONNX Runtime: the PyTorch path's
``BertForQuestionAnswering`` exported with its start and end logits stacked ``[B, L, 2]``,
fused and run as :class:`models.bert.onnx.BertOnnx` runs BERT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import BertForQuestionAnswering

from bench.schema.spec import RunSpec
from data.synthetic import TextBatch
from models.bert import config as bert
from models.bert.onnx import BertOnnx
from models.bert.torch import base_config, load_pretrained
from models.bert_qa import config as qa
from models.bert_qa.torch import seeded_qa, span_logits
from models.onnx_common import DEFAULT_CACHE


class _SpanLogits(torch.nn.Module):
    def __init__(self, model: BertForQuestionAnswering) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
        return span_logits(
            self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
        )


class BertQaOnnx(BertOnnx):
    step_description = (
        "infer: forward to start and end logits [B, L, 2] in ONNX Runtime through IO binding "
        "(inputs and outputs on the device). Exported from the PyTorch path's "
        "BertForQuestionAnswering (eager attention, same seeded weights), fused by "
        "onnxruntime.transformers' BERT optimizer, checked against the PyTorch model before "
        "timing."
    )

    def __init__(
        self,
        spec: RunSpec,
        cache_dir: Path = DEFAULT_CACHE,
        settings: bert.BertSettings = qa.SETTINGS,
    ) -> None:
        super().__init__(spec, cache_dir, settings)

    def source_model(self) -> torch.nn.Module:
        torch.manual_seed(self.spec.seed)
        if self.spec.pretrained:
            model = load_pretrained(
                self.spec.pretrained, self.shape.num_labels, model_class=BertForQuestionAnswering
            )
        else:
            # the optimizer recognises the eager attention pattern and fuses it
            model = BertForQuestionAnswering(base_config(self.shape, "eager"))
        model.config._attn_implementation = "eager"
        return _SpanLogits(model.eval())

    def seeded(self, spec: RunSpec, count: int) -> TextBatch:
        return seeded_qa(spec, self.shape, count)

    def logits_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.spec.seq_len, 2)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {**super().dynamic_axes(), "logits": {0: "batch", 1: "sequence"}}

    def model_variant(self) -> dict[str, Any]:
        return {**super().model_variant(), "head": "span"}
