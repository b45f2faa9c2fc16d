"""GluonNLP's BERT encoder (no pooler) with a two-unit dense span head, as GluonNLP's SQuAD
script (``scripts/bert/finetune_squad.py``, its ``BertForQA`` and ``BertForQALoss``) builds
and trains it, run as :class:`models.bert.gluon.BertGluon` runs BERT.

:func:`transformers_state` names the network's weights as transformers'
``BertForQuestionAnswering`` does, so that the two can be loaded with the same weights
(the parity test does)."""

from __future__ import annotations

# isort: off
import models.mxnet_env  # noqa: F401 - first: sets OMP_NUM_THREADS before MXNet loads
# isort: on

from typing import Any

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import gluon

from bench.schema.spec import RunSpec
from data.synthetic import TextBatch
from models.bert import config as bert
from models.bert.gluon import BertGluon, bert_encoder
from models.bert_qa import config as qa
from models.bert_qa.common import qa_batch


class SpanNet(gluon.HybridBlock):
    """BERT's sequence output through ``Dense(2, flatten=False)``: ``[B, L, 2]``."""

    def __init__(self, encoder: gluon.HybridBlock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.bert = encoder
            self.span_classifier = gluon.nn.Dense(units=2, flatten=False)

    def hybrid_forward(self, F, inputs, token_types, valid_length):  # noqa: ANN001, ANN201, N803
        return self.span_classifier(self.bert(inputs, token_types, valid_length))


class SpanLoss(gluon.HybridBlock):
    """The mean of the start and end positions' softmax cross-entropies, per sample."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.loss = gluon.loss.SoftmaxCELoss()

    def hybrid_forward(self, F, pred, label):  # noqa: ANN001, ANN201, N803
        start, end = F.split(pred, axis=2, num_outputs=2)
        labels = F.split(label, axis=1, num_outputs=2)
        start_loss = self.loss(start.reshape((0, -3)), labels[0].reshape((-1,)))
        end_loss = self.loss(end.reshape((0, -3)), labels[1].reshape((-1,)))
        return (start_loss + end_loss) / 2


class BertQaGluon(BertGluon):
    step_description = (
        "train: forward, the mean of the start and end softmax cross-entropies, backward, "
        "global-norm grad clip 1.0 (no finiteness check, so no host sync), BERTAdam lr 5e-5 "
        "wd 0.01 (none on LayerNorm and biases), warm-up then linear decay; infer: forward to "
        "start and end logits [B, L, 2]. Hybridized with static_alloc/static_shape. Batch "
        "staged on the device before timing."
    )
    #: SQuAD is read to evaluate only: a run's step is the synthetic one.
    data_step_description = None
    epoch_samples = qa.EPOCH_SAMPLES

    def __init__(self, spec: RunSpec, settings: bert.BertSettings = qa.SETTINGS) -> None:
        if spec.data is not None and spec.scenario != "evaluate":
            raise ValueError(
                "bert-qa on mxnet reads SQuAD to evaluate only: it trains on synthetic "
                "batches (train on SQuAD with the torch backend)"
            )
        super().__init__(spec, settings)

    def build_network(self, vocab: nlp.vocab.BERTVocab) -> gluon.HybridBlock:
        return SpanNet(bert_encoder(vocab, self.settings.shape, use_pooler=False))

    def _setup_data(self) -> nlp.vocab.BERTVocab:
        """An evaluation's vocabulary; SQuAD's features are built in evaluate()."""
        from data.selection import vocab_path
        from models import gluon_data

        spec = self.spec
        self.vocab = gluon_data.bert_vocab(vocab_path(spec.vocab, spec.pretrained))
        return self.vocab

    def _setup_training(self) -> None:
        super()._setup_training()
        self.loss_fn = SpanLoss()

    def _text_batch(self, count: int) -> TextBatch:
        """Seeded question-context sequences; ``labels`` [count, 2] start and end."""
        shape = self.settings.shape
        return qa_batch(count, self.spec.seq_len, vocab_size=shape.vocab_size, seed=self.spec.seed)

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """SQuAD v1.1 EM and F1 on the dev file of ``spec.data`` (see data.squad), the
        windows' ids, token types and valid lengths split across the contexts."""
        from data.selection import vocab_path
        from data.squad import evaluate_spans

        spec = self.spec
        assert spec.data is not None

        def logits(features: dict[str, np.ndarray]) -> np.ndarray:
            arrays = (
                features["input_ids"].astype("float32"),
                features["token_type_ids"].astype("float32"),
                features["attention_mask"].sum(axis=1).astype("float32"),
            )
            return self.logits([mx.nd.array(a) for a in arrays])

        return evaluate_spans(
            spec.data,
            vocab_path(spec.vocab, spec.pretrained),
            logits,
            batch=self.global_batch,
            seq_len=spec.seq_len,
            max_questions=max_samples,
        )


def transformers_state(net: SpanNet) -> dict[str, np.ndarray]:
    """The network's weights under ``BertForQuestionAnswering``'s state-dict names."""
    encoder = net.bert.encoder
    state = {
        "bert.embeddings.word_embeddings.weight": net.bert.word_embed[0].weight,
        "bert.embeddings.token_type_embeddings.weight": net.bert.token_type_embed[0].weight,
        "bert.embeddings.position_embeddings.weight": encoder.position_weight,
        "bert.embeddings.LayerNorm.weight": encoder.layer_norm.gamma,
        "bert.embeddings.LayerNorm.bias": encoder.layer_norm.beta,
        "qa_outputs.weight": net.span_classifier.weight,
        "qa_outputs.bias": net.span_classifier.bias,
    }
    for i, cell in enumerate(encoder.transformer_cells):
        layer = f"bert.encoder.layer.{i}."
        attention = cell.attention_cell
        for part in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                name = f"{layer}attention.self.{part}.{kind}"
                state[name] = attention.params.get(f"{part}_{kind}")
        pairs = {
            "attention.output.dense": cell.proj,
            "intermediate.dense": cell.ffn.ffn_1,
            "output.dense": cell.ffn.ffn_2,
        }
        for name, dense in pairs.items():
            state[f"{layer}{name}.weight"] = dense.weight
            state[f"{layer}{name}.bias"] = dense.bias
        for name, norm in (
            ("attention.output.LayerNorm", cell.layer_norm),
            ("output.LayerNorm", cell.ffn.layer_norm),
        ):
            state[f"{layer}{name}.weight"] = norm.gamma
            state[f"{layer}{name}.bias"] = norm.beta
    return {name: param.data().asnumpy() for name, param in state.items()}
