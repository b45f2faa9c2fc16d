"""BERT-base sequence classification on PyTorch through ``transformers``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

from bench.metrics import Accuracy
from bench.schema.spec import RunSpec
from data.synthetic import TextBatch, text_batch
from models.bert import config as bert
from models.samples import check_query, check_stage
from models.torch_common import TorchWorkload, index_tensor
from models.torch_exec import operator_names, sdpa_kernel

if TYPE_CHECKING:
    from models.torch_data import EvalData

#: The model's inputs (the batch also holds the labels, which inference does not use).
FEATURES = ("input_ids", "token_type_ids", "attention_mask")
#: The attention implementation the PyTorch path asks transformers for: PyTorch's
#: scaled_dot_product_attention, which picks a fused kernel (the one that ran is recorded).
ATTENTION = "sdpa"


def base_config(
    shape: bert.BertShape = bert.BERT_BASE, attn_implementation: str | None = None
) -> BertConfig:
    """BERT's configuration for ``shape``; ``attn_implementation`` None is transformers'
    default choice."""
    return BertConfig(
        attn_implementation=attn_implementation,
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
        type_vocab_size=shape.type_vocab,
        num_labels=shape.num_labels,
    )


def attention_mask_form(mask: torch.Tensor, all_ones: bool) -> torch.Tensor | None:
    """A padding mask ``[B, L]`` (1: token, 0: padding) as the model is given it: in a form
    transformers passes to SDPA as it is, never reading its values on the host (its own 2-d
    mask handling asks ``mask.all()`` in every forward, a device-to-host read on a GPU).

    ``all_ones`` is decided by the caller on the host copy of the mask, where it was made (a
    loader's batch, the staged batch): then None, no mask, as transformers chooses for a
    batch without padding (SDPA may then take its flash kernel). Otherwise the boolean
    ``[B, 1, L, L]`` mask transformers would build (True: attend), as a broadcast view."""
    if all_ones:
        return None
    batch, length = mask.shape
    return mask.to(torch.bool)[:, None, None, :].expand(batch, 1, length, length)


def seeded_text(spec: RunSpec, shape: bert.BertShape, count: int) -> TextBatch:
    """``count`` synthetic sequences of the spec's length and seed for a model of ``shape``
    (the PyTorch and ONNX Runtime paths' batches and sample libraries)."""
    return text_batch(
        count,
        spec.seq_len,
        vocab_size=shape.vocab_size,
        num_labels=shape.num_labels,
        seed=spec.seed,
    )


def load_pretrained(
    directory: str,
    num_labels: int,
    attn_implementation: str | None = None,
    model_class: type[Any] = BertForSequenceClassification,
) -> Any:
    """Weights from a local directory in ``save_pretrained`` layout; nothing is downloaded."""
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no BERT checkpoint in {path}: expected config.json and model weights "
            "as written by save_pretrained()"
        )
    return model_class.from_pretrained(
        path,
        num_labels=num_labels,
        local_files_only=True,
        attn_implementation=attn_implementation,
    )


class BertTorch(TorchWorkload):
    step_description = (
        "train: forward with loss, backward, grad clip 1.0, AdamW step and LR schedule step; "
        "infer: forward to logits. Attention through PyTorch SDPA. Batch staged on the device "
        "before timing. With CUDA graphs, everything but the LR schedule step is one replay."
    )
    #: The step of a run on a dataset (``spec.data``).
    data_step_description = (
        "each step waits for the loader's next batch (aclImdb reviews tokenized to WordPiece "
        "ids in the loader's worker processes; the wait is timed into the data section) and "
        "copies it to the device (non-blocking from pinned memory on CUDA). train: forward "
        "with loss, backward, grad clip 1.0, AdamW step and LR schedule step; infer: forward "
        "to logits. Attention through PyTorch SDPA."
    )
    grad_clip = bert.GRAD_CLIP
    #: The transformers model (BERT with its head) and the epoch that sets the LR decay.
    model_class: type[Any] = BertForSequenceClassification
    epoch_samples = bert.EPOCH_SAMPLES
    #: The training targets a batch carries beside FEATURES.
    targets: tuple[str, ...] = ("labels",)

    def __init__(self, spec: RunSpec, settings: bert.BertSettings = bert.LAB_SETTINGS) -> None:
        super().__init__(spec)
        self.settings = settings
        # The fp32 math mode bert.INFO declares for this backend ("fp32"): matrix multiplies
        # dominate, so it is the matmul switch that decides.
        self.fp32_math = bert.INFO.fp32_math["torch"] if self.device.type == "cuda" else "fp32"
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.fp32_math == "tf32"
        self.model: BertForSequenceClassification | None = None
        #: The model as the step calls it: compiled, or the model itself.
        self.forward: Any = None
        self.library: dict[str, torch.Tensor] | None = None
        self.attention_kernel: str | None = None
        self.attention_note: str | None = None
        #: Whether the staged batch (or sample library) has no padding, from its host copy.
        self.mask_full = False
        self.library_full: np.ndarray | None = None

    def setup(self) -> None:
        spec, shape = self.spec, self.settings.shape
        if spec.pretrained:
            model = load_pretrained(spec.pretrained, shape.num_labels, ATTENTION, self.model_class)
        else:
            model = self.model_class(base_config(shape, ATTENTION))
        self.model = model.to(self.device)
        if spec.data is not None:
            vocab_size = model.config.vocab_size
            self.when_data_opens(lambda: self._open_dataset(vocab_size))
        else:
            self._stage_batch()
        if spec.mode == "train":
            self.model.train()
            groups = _decay_groups(self.model, bert.WEIGHT_DECAY)
            if spec.cuda_graphs:
                # The captured update reads the learning rate from a device tensor, which the
                # schedule (outside the graph) fills in place: each group gets its own.
                for group in groups:
                    group["lr"] = torch.tensor(self.settings.learning_rate, device=self.device)
            # Fused on every device: the unfused update reads each parameter's step count on
            # the host, and the fused one takes the fp16 grad scaler's inf check on the device.
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=self.settings.learning_rate,
                fused=True,
                capturable=spec.cuda_graphs,
            )
            total = math.ceil(self.epoch_samples / spec.batch)
            warmup = self.settings.warmup_steps
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: bert.linear_warmup_decay(step, warmup, total)
            )
        else:
            self.model.eval()
        self.forward = self.compile_module(self.model)
        self.prepare_execution()

    def seeded(self, spec: RunSpec, count: int) -> dict[str, np.ndarray]:
        """``count`` synthetic sequences of ``spec``'s length and seed: FEATURES and the
        training targets."""
        host = seeded_text(spec, self.settings.shape, count)
        return {name: getattr(host, name) for name in (*FEATURES, *self.targets)}

    def _stage_batch(self) -> None:
        """The synthetic batch of a run without a dataset, on the device (and on the host for
        include_h2d)."""
        spec = self.spec
        arrays = self.seeded(spec.replace(seed=self.data_seed), spec.batch)
        self.host_batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        if self.device.type == "cuda" and spec.include_h2d:
            self.host_batch = {k: v.pin_memory() for k, v in self.host_batch.items()}
        self.batch = {k: v.to(self.device) for k, v in self.host_batch.items()}
        keep = [k for k in self.batch if k not in self.targets or spec.mode == "train"]
        self.mask_full = bool(arrays["attention_mask"].all())
        #: What the step passes the model: the attention mask in its form (made once here).
        self.step_inputs: dict[str, Any] = self._with_mask_form(
            {k: self.batch[k] for k in keep}, self.mask_full
        )
        self.host_inputs = {k: self.host_batch[k] for k in keep}

    def _open_dataset(self, model_vocab_size: int) -> None:
        """The loader over the spec's aclImdb folder, tokenized with its vocabulary."""
        from data.selection import vocab_path
        from models.torch_data import imdb_stream

        spec = self.spec
        assert spec.data is not None
        self.batches = imdb_stream(
            spec.data,
            spec.mode,
            vocab_path(spec.vocab, spec.pretrained),
            spec.seq_len,
            model_vocab_size=model_vocab_size,
            batch_size=spec.batch,
            workers=spec.loader_workers,
            seed=spec.seed,
            ranks=self.rank_and_size,
            pin_memory=self.device.type == "cuda",
        )

    def _inputs(self) -> dict[str, torch.Tensor]:
        """The step's inputs (labels only when training, chosen in setup). With include_h2d,
        copied from pinned host memory in the step, as every backend's timed copy is. With a
        dataset: the loader's next batch, copied (its labels too when training)."""
        if self.batches is not None:
            batch = self.next_batch()
            names = (*FEATURES, *self.targets) if self.spec.mode == "train" else FEATURES
            inputs = {k: getattr(batch, k).to(self.device, non_blocking=True) for k in names}
            return self._with_mask_form(inputs, bool(batch.attention_mask.numpy().all()))
        if self.spec.include_h2d:
            inputs = {k: v.to(self.device, non_blocking=True) for k, v in self.host_inputs.items()}
            return self._with_mask_form(inputs, self.mask_full)
        return self.step_inputs

    def _with_mask_form(self, inputs: dict[str, Any], all_ones: bool) -> dict[str, Any]:
        """``inputs`` with the attention mask in :func:`attention_mask_form`. A compiled model
        is always given the mask (as transformers does under compile): one input structure
        for every batch, so a batch without padding does not compile it again."""
        no_mask = all_ones and self.spec.compile == "off"
        return {**inputs, "attention_mask": attention_mask_form(inputs["attention_mask"], no_mask)}

    def graph_body(self) -> torch.Tensor:
        """Train: forward with loss, backward, clip, AdamW (the loss); infer: the logits."""
        assert self.model is not None, "setup() first"
        inputs = self._inputs()
        if self.spec.mode == "train":
            with self.autocast():
                loss = self.forward(**inputs).loss
            self.backward_and_step(loss, self.optimizer)
            return loss.detach()
        with torch.inference_mode():
            return self._logits(inputs)

    def finish_step(self, out: torch.Tensor) -> torch.Tensor:
        if self.spec.mode == "train":
            self.scheduler.step()
        return out

    def inspect_step(self) -> None:
        """Profile one step's operators and record the SDPA kernel that ran."""
        names = operator_names(self.step, self.sync)
        self.setup_steps += 1
        self.attention_kernel = sdpa_kernel(names)
        self.attention_note = None
        if self.attention_kernel is None:
            self.attention_note = "no SDPA operator ran in the profiled step" + (
                ": the compiled graph computes attention in the compiler's own kernels"
                if self.spec.compile != "off"
                else ""
            )

    def _logits(self, features: dict[str, Any]) -> torch.Tensor:
        """Inference: forward to logits (call in inference mode)."""
        assert self.model is not None, "setup() first"
        with self.autocast():
            return self.forward(**features).logits

    def make_eval_data(self, max_samples: int | None) -> EvalData:
        from data.selection import vocab_path
        from models.torch_data import imdb_eval_data

        spec = self.spec
        assert spec.data is not None
        return imdb_eval_data(
            spec.data,
            vocab_path(spec.vocab, spec.pretrained),
            spec.seq_len,
            batch_size=spec.batch,
            workers=spec.loader_workers,
            max_samples=max_samples,
            pin_memory=self.device.type == "cuda",
        )

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """Accuracy (:class:`bench.metrics.Accuracy`) of the logits'
        argmax on IMDB's test reviews, in eval mode (no dropout; the training flag restored
        after)."""
        assert self.model is not None, "setup() first"
        data = self.eval_data(max_samples)
        metric = Accuracy()
        with self.eval_mode(self.model):
            for batch in data:
                features = {
                    k: getattr(batch, k).to(self.device, non_blocking=True) for k in FEATURES
                }
                features = self._with_mask_form(features, bool(batch.attention_mask.numpy().all()))
                logits = self._logits(features).float().cpu().numpy()
                metric.update(logits, batch.labels.numpy())
        return {
            "metric": "accuracy",
            "value": metric.value,
            "samples": metric.total,
            "split": data.split,
        }

    def stage_samples(self, count: int) -> None:
        """``count`` seeded sequences (ids, token types, attention mask) on the device.
        ``include_h2d`` does not apply: the library stays on the device."""
        check_stage(self, count)
        self.stage_arrays(self.seeded(self.spec, count))

    def stage_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Host sequences (FEATURES) as the sample library on the device, with which of them
        have no padding, read here on the host (a server's batch of requests, too)."""
        self.library = {
            name: torch.from_numpy(np.ascontiguousarray(arrays[name])).to(self.device)
            for name in FEATURES
        }
        self.library_full = np.asarray(arrays["attention_mask"]).all(axis=1)

    def infer_samples(self, indices: Sequence[int]) -> torch.Tensor:
        """Logits [len(indices), num_labels] for the staged sequences at ``indices``,
        gathered on the device."""
        staged = None if self.library is None else len(self.library["input_ids"])
        check_query(self, staged, indices)
        assert self.library is not None and self.library_full is not None
        full = bool(self.library_full[list(indices)].all())
        with torch.inference_mode():
            index = index_tensor(indices, self.device)
            features = {k: v.index_select(0, index) for k, v in self.library.items()}
            return self._logits(self._with_mask_form(features, full))

    def save_weights(self, directory: Path) -> list[str]:
        """``save_pretrained`` of the model (never its compiled or DDP wrapper), which
        ``load_pretrained`` reads, and the run's ``vocab.txt`` beside it when it had one."""
        from data.selection import copy_vocab

        assert self.model is not None, "setup() first"
        before = {p.name for p in directory.iterdir()}
        self.model.save_pretrained(directory)
        written = sorted(p.name for p in directory.iterdir() if p.name not in before)
        return written + copy_vocab(self.spec.vocab, self.spec.pretrained, directory)

    def details(self) -> dict[str, Any]:
        config = self.model.config if self.model is not None else None
        return {
            "attention": getattr(config, "_attn_implementation", None),
            "parameters": sum(p.numel() for p in self.model.parameters()) if self.model else None,
            "pretrained": self.spec.pretrained is not None,
            "fp32_math": self.fp32_math,
        }

    def execution_details(self) -> dict[str, Any]:
        config = self.model.config if self.model is not None else None
        optimizer = getattr(self, "optimizer", None)
        return {
            **super().execution_details(),
            "channels_last": False,
            "fused_optimizer": bool(optimizer is not None and optimizer.defaults.get("fused")),
            "attention_implementation": getattr(config, "_attn_implementation", None),
            "attention_kernel": self.attention_kernel,
            "attention_kernel_note": self.attention_note,
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
