"""BERT-base through ONNX Runtime: exported from the PyTorch path's model, fused by ONNX
Runtime's transformer optimizer (attention, layer norm, GELU), fp16 on a GPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BertForSequenceClassification

from bench.schema.spec import RunSpec
from data.synthetic import TextBatch, text_batch
from models.bert import config as bert
from models.bert.torch import base_config, load_pretrained, seeded_text
from models.onnx_common import DEFAULT_CACHE, OnnxWorkload, save_model
from models.samples import check_query, check_stage
from models.torch_common import index_tensor

NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: Operators of ONNX Runtime's contrib domain that the BERT optimizer fuses patterns into.
FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


class _Logits(torch.nn.Module):
    def __init__(self, model: BertForSequenceClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


class BertOnnx(OnnxWorkload):
    step_description = (
        "infer: forward to logits in ONNX Runtime through IO binding (inputs and outputs "
        "on the device). Exported from the PyTorch path's model (eager attention, same "
        "seeded weights), fused by onnxruntime.transformers' BERT optimizer, checked "
        "against the PyTorch model before timing."
    )
    input_names = NAMES
    output_names = ("logits",)

    def __init__(
        self,
        spec: RunSpec,
        cache_dir: Path = DEFAULT_CACHE,
        settings: bert.BertSettings = bert.LAB_SETTINGS,
    ) -> None:
        super().__init__(spec, cache_dir)
        self.shape = settings.shape  # inference: the hyperparameters do not apply
        self.fusion: dict[str, int] = {}
        self.library: dict[str, torch.Tensor] | None = None

    def seeded(self, spec: RunSpec, count: int) -> TextBatch:
        """``count`` synthetic sequences of the spec's length and seed."""
        return seeded_text(spec, self.shape, count)

    def declared_fp32_math(self) -> str:
        return bert.INFO.fp32_math["onnxruntime"]

    def source_model(self) -> torch.nn.Module:
        torch.manual_seed(self.spec.seed)
        if self.spec.pretrained:
            model = load_pretrained(self.spec.pretrained, self.shape.num_labels)
        else:
            config = base_config(self.shape)
            # the optimizer recognises the eager attention pattern and fuses it
            config._attn_implementation = "eager"
            model = BertForSequenceClassification(config)
        model.config._attn_implementation = "eager"
        return _Logits(model.eval())

    def export_inputs(self) -> tuple[torch.Tensor, ...]:
        batch = text_batch(2, 16, vocab_size=self.shape.vocab_size, seed=0)
        return tuple(torch.from_numpy(getattr(batch, n)) for n in NAMES)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {n: {0: "batch", 1: "sequence"} for n in NAMES}
        axes["logits"] = {0: "batch"}
        return axes

    def logits_shape(self, batch: int) -> tuple[int, ...]:
        """The output's shape for ``batch`` sequences."""
        return (batch, self.shape.num_labels)

    def model_variant(self) -> dict[str, Any]:
        return {**super().model_variant(), "shape": self.shape}

    def postprocess(self, model_path: Path) -> Path:
        """Fuse attention, layer norms and GELU (and convert to fp16) once per cached model."""
        import onnx
        from onnxruntime.transformers import optimizer

        gpu = self.device.type == "cuda"
        suffix = ("-fp16" if self.spec.precision == "fp16" else "") + ("-gpu" if gpu else "-cpu")
        out = model_path.with_name(f"{model_path.stem}-opt{suffix}.onnx")
        if not out.exists():
            model = optimizer.optimize_model(
                str(model_path),
                model_type="bert",
                num_heads=self.shape.heads,
                hidden_size=self.shape.hidden,
                opt_level=0,
                use_gpu=gpu,
            )
            if self.spec.precision == "fp16":
                model.convert_float_to_float16(keep_io_types=True)
            save_model(model, out)
        ops = [node.op_type for node in onnx.load(str(out), load_external_data=False).graph.node]
        self.fusion = {op: ops.count(op) for op in FUSED_OPS if op in ops}
        return out

    def setup(self) -> None:
        spec = self.spec
        self.model_path, source = self.prepare_model()
        vocab = self.shape.vocab_size

        def make_inputs(seed: int) -> dict[str, np.ndarray]:
            batch = text_batch(3, spec.seq_len, vocab_size=vocab, seed=seed)
            return {n: getattr(batch, n) for n in NAMES}

        def reference(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [model(*(torch.from_numpy(inputs[n]) for n in NAMES)).numpy()]

        host = self.seeded(spec, spec.batch)
        inputs = {n: torch.from_numpy(getattr(host, n)).to(self.device) for n in NAMES}
        self.host_inputs = {n: torch.from_numpy(getattr(host, n)) for n in NAMES}
        if self.device.type == "cuda" and spec.include_h2d:  # as the other paths copy
            self.host_inputs = {n: t.pin_memory() for n, t in self.host_inputs.items()}
        logits = torch.empty(self.logits_shape(spec.batch), device=self.device)
        self.start(source, make_inputs, reference, inputs, {"logits": logits})

    def step(self) -> torch.Tensor:
        if self.spec.include_h2d:
            for name, tensor in self.binding.inputs.items():
                tensor.copy_(self.host_inputs[name], non_blocking=True)
        self.binding.run(inputs_written=self.spec.include_h2d)
        return self.binding.outputs["logits"]

    def stage_samples(self, count: int) -> None:
        """``count`` seeded sequences on the device as torch tensors. ``include_h2d`` does
        not apply."""
        check_stage(self, count)
        host = self.seeded(self.spec, count)
        self.library = {n: torch.from_numpy(getattr(host, n)).to(self.device) for n in NAMES}

    def infer_samples(self, indices: Sequence[int]) -> torch.Tensor:
        """Logits for the staged sequences at ``indices``: gathered with torch on the
        device, run through IO binding with per-call tensors (see ``run_batch``)."""
        staged = None if self.library is None else len(self.library["input_ids"])
        check_query(self, staged, indices)
        assert self.library is not None
        index = index_tensor(indices, self.device)
        inputs = {n: t.index_select(0, index) for n, t in self.library.items()}
        logits = torch.empty(self.logits_shape(len(indices)), device=self.device)
        return self.run_batch(inputs, {"logits": logits})["logits"]

    def details(self) -> dict[str, Any]:
        return {**super().details(), "fused_operators": self.fusion}
