"""BERT-base question answering on PyTorch: transformers' ``BertForQuestionAnswering`` (BERT
without its pooler, a two-unit dense layer on every token for the start and end logits),
trained and run as :class:`models.bert.torch.BertTorch` runs BERT; the loss is the mean of
the start and end positions' cross-entropies (transformers' own)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import BertForQuestionAnswering

from bench.schema.spec import RunSpec
from data.synthetic import TextBatch
from models.bert import config as bert
from models.bert.torch import FEATURES, BertTorch
from models.bert_qa import config as qa
from models.bert_qa.common import qa_batch

if TYPE_CHECKING:
    from models.torch_data import EvalData

#: The training targets of a batch: the answer's first and last token.
TARGETS = ("start_positions", "end_positions")


def seeded_qa(spec: RunSpec, shape: bert.BertShape, count: int) -> TextBatch:
    """``count`` synthetic question-context sequences of the spec's length and seed."""
    return qa_batch(count, spec.seq_len, vocab_size=shape.vocab_size, seed=spec.seed)


def span_logits(output: Any) -> torch.Tensor:
    """``[B, L, 2]``: start and end logits stacked as GluonNLP's span head gives them."""
    return torch.stack([output.start_logits, output.end_logits], dim=-1)


class BertQaTorch(BertTorch):
    step_description = (
        "train: forward with the mean of the start and end cross-entropies, backward, grad "
        "clip 1.0, AdamW step and LR schedule step; infer: forward to start and end logits. "
        "Attention through PyTorch SDPA. Batch staged on the device before timing. With CUDA "
        "graphs, everything but the LR schedule step is one replay."
    )
    data_step_description = (
        "each step takes the next batch of SQuAD v1.1 train windows (built at set-up from "
        "train-v1.1.json: WordPiece windows of the run's length, stride 128 and query 64 at "
        "384 (data.squad.window_settings), held in memory, no loader workers; the "
        "take is timed into the data section) and copies it to the device; then as the "
        "synthetic step: forward with the start and end cross-entropies, backward, grad clip "
        "1.0, AdamW step and LR schedule step."
    )
    model_class = BertForQuestionAnswering
    targets = TARGETS
    epoch_samples = qa.EPOCH_SAMPLES

    def __init__(self, spec: RunSpec, settings: bert.BertSettings = qa.SETTINGS) -> None:
        super().__init__(spec, settings)

    def _open_dataset(self, model_vocab_size: int) -> None:
        """With ``spec.data`` (a folder of SQuAD v1.1's files): for training, the windows of
        train-v1.1.json in memory; an evaluation builds dev-v1.1.json's in evaluate() and
        stages the synthetic batch for whatever set-up steps."""
        from data.selection import vocab_path
        from data.squad import FeatureStream, read_features

        spec = self.spec
        assert spec.data is not None
        if spec.scenario == "evaluate":
            self._stage_batch()  # what set-up steps (if any) run on
            return
        vocab = vocab_path(spec.vocab, spec.pretrained)
        _, features = read_features(spec.data, "train", vocab, spec.seq_len)
        if int(features.input_ids.max(initial=0)) >= model_vocab_size:
            raise ValueError(f"{vocab} has ids beyond the model's {model_vocab_size} embeddings")
        self.batches = FeatureStream(features, spec.batch, spec.seed)

    def seeded(self, spec: RunSpec, count: int) -> dict[str, np.ndarray]:
        host = seeded_qa(spec, self.settings.shape, count)
        arrays = {name: getattr(host, name) for name in FEATURES}
        return {**arrays, "start_positions": host.labels[:, 0], "end_positions": host.labels[:, 1]}

    def _inputs(self) -> dict[str, torch.Tensor]:
        if self.batches is None:
            return super()._inputs()
        batch = self.next_batch()
        names = (*FEATURES, *TARGETS) if self.spec.mode == "train" else FEATURES
        inputs = {k: torch.from_numpy(batch[k]).to(self.device, non_blocking=True) for k in names}
        return self._with_mask_form(inputs, bool(batch["attention_mask"].all()))

    def _logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inference: ``[B, L, 2]`` start and end logits (call in inference mode)."""
        assert self.model is not None, "setup() first"
        with self.autocast():
            return span_logits(self.forward(**features))

    def make_eval_data(self, max_samples: int | None) -> EvalData:
        raise NotImplementedError("bert-qa evaluates SQuAD through evaluate()")

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """SQuAD v1.1 EM and F1 (official rules) of the best span per question on the dev
        file of ``spec.data`` (or its first ``max_samples`` questions), in eval mode."""
        from data.selection import vocab_path
        from data.squad import evaluate_spans

        assert self.model is not None, "setup() first"
        spec = self.spec
        assert spec.data is not None

        def logits(features: dict[str, np.ndarray]) -> np.ndarray:
            assert self.model is not None
            with self.eval_mode(self.model), torch.inference_mode():
                tensors = {k: torch.from_numpy(v).to(self.device) for k, v in features.items()}
                full = bool(features["attention_mask"].all())
                return self._logits(self._with_mask_form(tensors, full)).float().cpu().numpy()

        return evaluate_spans(
            spec.data,
            vocab_path(spec.vocab, spec.pretrained),
            logits,
            batch=spec.batch,
            seq_len=spec.seq_len,
            max_questions=max_samples,
        )
