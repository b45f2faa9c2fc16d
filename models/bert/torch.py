"""BERT-base sequence classification on PyTorch through ``transformers``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

from bench.run.spec import RunSpec
from data.synthetic import text_batch
from models.bert import config as bert
from models.torch_common import TorchWorkload


def base_config(shape: bert.BertShape = bert.BERT_BASE) -> BertConfig:
    return BertConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
        type_vocab_size=shape.type_vocab,
        num_labels=shape.num_labels,
    )


def load_pretrained(directory: str, num_labels: int) -> BertForSequenceClassification:
    """Weights from a local directory in ``save_pretrained`` layout; nothing is downloaded."""
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no BERT checkpoint in {path}: expected config.json and model weights "
            "as written by save_pretrained()"
        )
    return BertForSequenceClassification.from_pretrained(
        path, num_labels=num_labels, local_files_only=True
    )


class BertTorch(TorchWorkload):
    step_description = (
        "train: forward with loss, backward, grad clip 1.0, AdamW step and LR schedule step; "
        "infer: forward to logits. Batch staged on the device before timing."
    )
    grad_clip = bert.GRAD_CLIP

    def __init__(
        self,
        spec: RunSpec,
        shape: bert.BertShape = bert.BERT_BASE,
        learning_rate: float = bert.LEARNING_RATE,
        warmup_steps: int = bert.WARMUP_STEPS,
    ) -> None:
        super().__init__(spec)
        self.shape = shape
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.model: BertForSequenceClassification | None = None

    def setup(self) -> None:
        spec = self.spec
        if spec.pretrained:
            model = load_pretrained(spec.pretrained, self.shape.num_labels)
        else:
            model = BertForSequenceClassification(base_config(self.shape))
        self.model = model.to(self.device)
        host = text_batch(
            spec.batch,
            spec.seq_len,
            vocab_size=self.shape.vocab_size,
            num_labels=self.shape.num_labels,
            seed=spec.seed,
        )
        self.host_batch = {
            "input_ids": torch.from_numpy(host.input_ids),
            "token_type_ids": torch.from_numpy(host.token_type_ids),
            "attention_mask": torch.from_numpy(host.attention_mask),
            "labels": torch.from_numpy(host.labels),
        }
        if self.device.type == "cuda" and spec.include_h2d:
            self.host_batch = {k: v.pin_memory() for k, v in self.host_batch.items()}
        self.batch = {k: v.to(self.device) for k, v in self.host_batch.items()}

        if spec.mode == "train":
            self.model.train()
            self.optimizer = torch.optim.AdamW(
                _decay_groups(self.model, bert.WEIGHT_DECAY),
                lr=self.learning_rate,
                fused=self.device.type == "cuda",
            )
            total = math.ceil(bert.EPOCH_SAMPLES / spec.batch)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer,
                lambda step: bert.linear_warmup_decay(step, self.warmup_steps, total),
            )
        else:
            self.model.eval()

    def _inputs(self) -> dict[str, torch.Tensor]:
        if self.spec.include_h2d:
            return {k: v.to(self.device, non_blocking=True) for k, v in self.host_batch.items()}
        return self.batch

    def step(self) -> torch.Tensor:
        assert self.model is not None, "setup() first"
        inputs = self._inputs()
        if self.spec.mode == "train":
            with self.autocast():
                loss = self.model(**inputs).loss
            self.backward_and_step(loss, self.optimizer)
            self.scheduler.step()
            return loss.detach()
        features = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.inference_mode(), self.autocast():
            return self.model(**features).logits

    def flops_per_sample(self) -> tuple[float | None, str]:
        flops = bert.forward_flops_per_sample(self.spec.seq_len, self.shape)
        return flops, f"analytic: matrix multiplies of BERT at seq_len {self.spec.seq_len}"

    def fp32_uses_tf32(self) -> bool:
        cuda_fp32 = self.device.type == "cuda" and self.spec.precision == "fp32"
        return cuda_fp32 and torch.backends.cuda.matmul.allow_tf32  # matmuls dominate

    def details(self) -> dict[str, Any]:
        config = self.model.config if self.model is not None else None
        return {
            "attention": getattr(config, "_attn_implementation", None),
            "parameters": sum(p.numel() for p in self.model.parameters()) if self.model else None,
            "pretrained": self.spec.pretrained is not None,
        }


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights, none on biases and LayerNorm parameters (the lab's BERTAdam)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
