"""GluonNLP ``bert_12_768_12`` with a classification head, fine-tuned as in the BERT lab, on one
context or, with ``spec.gpus``, on several in one process (as GluonNLP's scripts do), and
evaluated (accuracy on IMDB's test reviews)."""

from __future__ import annotations

# isort: off
import models.mxnet_env  # noqa: F401 - first: sets OMP_NUM_THREADS before MXNet loads
# isort: on

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from bench.metrics import Accuracy
from bench.schema.spec import RunSpec
from data.selection import copy_vocab, vocab_path
from data.synthetic import TextBatch, text_batch
from models import gluon_data
from models.bert import config as bert
from models.mxnet_common import KVSTORE, MxnetWorkload, kvstore_details, quiet_undecided_type
from models.samples import check_query, check_stage

MODEL_NAME = "bert_12_768_12"
#: What ``save_weights`` names the BERTClassifier's parameters (``_find_params`` takes any
#: ``*.params``).
PARAMS_FILE = "bert_classifier.params"


def uncased_vocab(size: int = bert.BERT_BASE.vocab_size) -> nlp.vocab.BERTVocab:
    """A BERTVocab of ``size`` entries (its five special tokens plus placeholder words),
    built locally so that nothing is downloaded. Synthetic batches feed token ids directly,
    so only the size matters: it sets the embedding table."""
    words = nlp.data.count_tokens(f"word{i}" for i in range(size - 5))
    vocab = nlp.vocab.BERTVocab(words)
    if len(vocab) != size:
        raise ValueError(f"vocabulary has {len(vocab)} entries, expected {size}")
    return vocab


class BertGluon(MxnetWorkload):
    step_description = (
        "train: forward, softmax cross-entropy, backward, global-norm grad clip 1.0 "
        "(no finiteness check, so no host sync), BERTAdam lr 5e-5 wd 0.01 (none on LayerNorm "
        "and biases), warm-up then linear decay; infer: forward to logits. Hybridized "
        "with static_alloc/static_shape. Batch staged on the device before timing; with "
        "include_h2d the step copies it (and, when training, the labels) from pinned host "
        "memory, staged in float32 in setup. With several contexts (gpus) each runs its "
        "share of the global batch, its loss a share of the global batch's mean; the device "
        "kvstore sums the gradients, the clip is over the summed gradients and every context "
        "applies the same update."
    )
    #: The step of a run on a dataset (``spec.data``), in place of the above.
    data_step_description = (
        "train: the loader's next batch (waited for and timed) of IMDB reviews tokenized in "
        "the loader workers (GluonNLP BERTTokenizer, BERTSentenceTransform padded to the "
        "sequence length), each context's share copied to it; then as the synthetic step: "
        "forward, softmax cross-entropy, backward, global-norm grad clip 1.0, BERTAdam lr 5e-5 "
        "wd 0.01, warm-up then linear decay, the device kvstore summing gradients across "
        "contexts. infer: the loader's next batch, forward to logits. Hybridized with "
        "static_alloc/static_shape; every batch is full (last_batch rollover)."
    )

    #: Samples of the epoch that sets the length of the LR decay.
    epoch_samples = bert.EPOCH_SAMPLES

    def __init__(self, spec: RunSpec, settings: bert.BertSettings = bert.LAB_SETTINGS) -> None:
        super().__init__(spec)
        self.settings = settings
        self.library: tuple[mx.nd.NDArray, ...] | None = None
        #: With ``spec.data``: the vocabulary of its ``vocab.txt`` (made in setup).
        self.vocab: nlp.vocab.BERTVocab | None = None

    def setup(self) -> None:
        with quiet_undecided_type():
            self._setup()
        self.capture_cuda_graphs()

    def _setup(self) -> None:
        spec, shape = self.spec, self.settings.shape
        # with data, the loader (and its worker processes) before the model; its vocabulary
        # sets the embedding table, which must hold every id the tokenizer gives
        vocab = self._setup_data() if spec.data is not None else uncased_vocab(shape.vocab_size)
        self.model = self.build_network(vocab)
        if spec.pretrained:
            path = str(_find_params(Path(spec.pretrained)))
            self.model.load_parameters(path, ctx=self.contexts)
        else:
            # drawn once on the host and copied to every context
            self.model.initialize(init=mx.init.Normal(0.02), ctx=self.contexts)
        self.hybridize(self.model)
        if spec.data is None:
            self._stage_synthetic()
        if spec.mode == "train":
            self._setup_training()

    def build_network(self, vocab: nlp.vocab.BERTVocab) -> gluon.HybridBlock:
        """GluonNLP's BERT encoder (with its pooler) under a BERTClassifier head."""
        shape = self.settings.shape
        encoder = bert_encoder(vocab, shape, use_pooler=True)
        return nlp.model.BERTClassifier(encoder, num_classes=shape.num_labels, dropout=0.1)

    def _setup_data(self) -> nlp.vocab.BERTVocab:
        """The loader over ``spec.data`` (see models.gluon_data.imdb_stream), or in an
        ``evaluate`` run the test split's only; returns the vocabulary. The loader's shuffle
        draws from numpy's global generator: seeded here."""
        spec = self.spec
        assert spec.data is not None
        vocab_file = vocab_path(spec.vocab, spec.pretrained)
        if spec.scenario == "evaluate":
            self.vocab = gluon_data.bert_vocab(vocab_file)
            self.eval_data(spec.eval_samples)  # the test split is all the run reads
            return self.vocab
        if self.defers_data:
            # the vocabulary sizes the model now; the loader opens in the run's clock
            self.vocab = gluon_data.bert_vocab(vocab_file)
        self.when_data_opens(lambda: self._open_stream(vocab_file))
        return self.vocab

    def _open_stream(self, vocab_file: Path) -> None:
        """The training loader over ``spec.data``, and its vocabulary."""
        spec = self.spec
        assert spec.data is not None
        np.random.seed(spec.seed)
        self.batches, self.vocab = gluon_data.imdb_stream(
            spec.data,
            spec.mode,
            vocab_file,
            spec.seq_len,
            self.global_batch,
            spec.loader_workers,
        )

    def _stage_synthetic(self) -> None:
        spec = self.spec
        host = self._text_batch(self.global_batch)
        features = [self.split(a.astype("float32")) for a in _feature_arrays(host)]
        #: Each context's share of the classifier's inputs.
        self.inputs: list[tuple[mx.nd.NDArray, ...]] = list(zip(*features, strict=True))
        #: Each context's share of the labels.
        self.labels = self.split(host.labels.astype("float32"))
        if spec.include_h2d:
            # Page-locked on GPU runs and already float32: step() only copies. Flat, context
            # by context, each context's inputs in the classifier's argument order.
            staged = [self.stage_shares_on_host(a) for a in _feature_arrays(host)]
            self.host_inputs = tuple(a for share in zip(*staged, strict=True) for a in share)
            if spec.mode == "train":
                self.host_labels = self.stage_shares_on_host(host.labels)

    def _setup_training(self) -> None:
        for _, param in self.model.collect_params(".*beta|.*gamma|.*bias").items():
            param.wd_mult = 0.0
        self.params = [p for p in self.model.collect_params().values() if p.grad_req != "null"]
        # The device kvstore (none is made for one context); the gradients are summed,
        # clipped, then applied by each context's own updater, as GluonNLP's scripts do.
        self.trainer = gluon.Trainer(
            self.model.collect_params(),
            "bertadam",
            {
                "learning_rate": self.settings.learning_rate,
                "epsilon": 1e-6,
                "wd": bert.WEIGHT_DECAY,
            },
            kvstore=KVSTORE,
            update_on_kvstore=False,
        )
        if self.amp is not None:
            self.amp.init_trainer(self.trainer)
        self.loss_fn = gluon.loss.SoftmaxCELoss()
        self.total_steps = math.ceil(self.epoch_samples / self.global_batch)
        self.step_count = 0

    def _text_batch(self, count: int) -> TextBatch:
        shape = self.settings.shape
        return text_batch(
            count,
            self.spec.seq_len,
            vocab_size=shape.vocab_size,
            num_labels=shape.num_labels,
            seed=self.spec.seed,
        )

    def _features(self, host: TextBatch) -> tuple[mx.nd.NDArray, ...]:
        """The classifier's inputs on the device: token ids, token types, valid lengths."""
        return tuple(self.to_device(a.astype("float32")) for a in _feature_arrays(host))

    def _inputs(self) -> list[tuple[mx.nd.NDArray, ...]]:
        if not self.spec.include_h2d:
            return self.inputs
        copies = [self.copy_to_device(a) for a in self.host_inputs]
        width = len(copies) // len(self.contexts)
        return [tuple(copies[i : i + width]) for i in range(0, len(copies), width)]

    def _labels(self) -> list[mx.nd.NDArray]:
        if not self.spec.include_h2d:
            return self.labels
        return [self.copy_to_device(a) for a in self.host_labels]

    def step(self) -> Any:
        """Infer: the logits, a list of each context's with several. Train: the mean loss
        of the batch, a list of each context's share of it with several."""
        if self.spec.data is not None:
            return self._data_step()
        inputs = self._inputs()
        if self.spec.mode == "infer":
            return self.one_or_all([self.model(*x) for x in inputs])
        return self._train(inputs, self._labels())

    def _data_step(self) -> Any:
        """The step on the loader's next batch: each context's share copied to it."""
        *features, labels = self.next_batch()
        inputs = list(zip(*(self.split(a) for a in features), strict=True))
        if self.spec.mode == "infer":
            return self.one_or_all([self.model(*x) for x in inputs])
        return self._train(inputs, self.split(labels))

    def _train(self, inputs: list[tuple[mx.nd.NDArray, ...]], labels: list[mx.nd.NDArray]) -> Any:
        """Schedule, forward, loss, backward, clip and update on each context's share."""
        warmup = self.settings.warmup_steps
        scale = bert.linear_warmup_decay(self.step_count, warmup, self.total_steps)
        self.trainer.set_learning_rate(self.settings.learning_rate * scale)
        self.step_count += 1
        with autograd.record():
            # each context's share of the global batch's mean loss: the summed gradients
            # are the mean's, as on one context, and the clip applies to them unchanged
            losses = [
                self.loss_fn(self.model(*x), y).sum() / self.global_batch
                for x, y in zip(inputs, labels, strict=True)
            ]
            if self.amp is not None:
                with self.amp.scale_loss(losses, self.trainer) as scaled:
                    autograd.backward(scaled)
            else:
                autograd.backward(losses)
        self.trainer.allreduce_grads()
        # the norm over the summed gradients (the same on every context), each scaled
        nlp.utils.clip_grad_global_norm(self.params, bert.GRAD_CLIP, check_isfinite=False)
        self.trainer.update(1)
        return self.one_or_all(losses)

    def make_eval_data(self, max_samples: int | None) -> gluon_data.EvalData:
        spec = self.spec
        if spec.data is None or self.vocab is None:
            raise RuntimeError("an evaluation needs setup() over a dataset (spec.data)")
        return gluon_data.imdb_eval_data(
            spec.data,
            self.vocab,
            spec.seq_len,
            self.global_batch,
            spec.loader_workers,
            max_samples,
        )

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """Accuracy (:class:`bench.metrics.Accuracy`) of the logits'
        argmax on IMDB's test reviews, each batch split across the contexts, in inference
        mode (no dropout; the hybridized graph serves both modes, as BERT's forward does
        not branch on the mode)."""
        data = self.eval_data(max_samples)
        metric = Accuracy()
        for *features, labels in data:
            metric.update(self.logits(features), labels.asnumpy())
        return {
            "metric": "accuracy",
            "value": metric.value,
            "samples": metric.total,
            "split": data.split,
        }

    def logits(self, features: Sequence[mx.nd.NDArray]) -> np.ndarray:
        """The classifier's logits ``[B, classes]`` for a host batch of any size (token
        ids, token types, valid lengths), split across the contexts, in inference mode, on
        the host."""
        shares = zip(*(self.split_uneven(a) for a in features), strict=True)
        with autograd.predict_mode():
            return np.concatenate([self.model(*x).asnumpy() for x in shares])

    def stage_samples(self, count: int) -> None:
        """``count`` seeded sequences in the run's context. ``include_h2d`` does not apply."""
        check_stage(self, count)
        self.library = self._features(self._text_batch(count))

    def infer_samples(self, indices: Sequence[int]) -> mx.nd.NDArray:
        """Logits for the staged sequences at ``indices``, gathered with ``nd.take``.

        The network is hybridized with static_alloc/static_shape: a query whose batch size
        differs from the previous call's makes MXNet infer shapes and plan memory again
        (results stay correct; that call pays for the planning)."""
        staged = None if self.library is None else int(self.library[0].shape[0])
        check_query(self, staged, indices)
        assert self.library is not None
        index = self.index_array(indices)
        return self.model(*(mx.nd.take(a, index, axis=0) for a in self.library))

    def save_weights(self, directory: Path) -> list[str]:
        """The BERTClassifier's ``save_parameters`` (the ``*.params`` file ``_find_params``
        reads) and the run's ``vocab.txt`` beside it when it had one."""
        self.model.save_parameters(str(directory / PARAMS_FILE))
        return [PARAMS_FILE, *copy_vocab(self.spec.vocab, self.spec.pretrained, directory)]

    def details(self) -> dict[str, Any]:
        params = self.model.collect_params().values()
        details: dict[str, Any] = {
            "parameters": sum(int(math.prod(p.shape)) for p in params),
            "pretrained": self.spec.pretrained is not None,
            "fp32_math": self.fp32_math,
        }
        if self.spec.gpus is not None and self.spec.mode == "train":
            details["trainer"] = kvstore_details(self.trainer)
        return details


def _feature_arrays(host: TextBatch) -> tuple[Any, ...]:
    """The classifier's inputs, in its argument order: token ids, token types, valid lengths."""
    return (host.input_ids, host.token_type_ids, host.valid_length)


def bert_encoder(
    vocab: nlp.vocab.BERTVocab, shape: bert.BertShape, use_pooler: bool
) -> gluon.HybridBlock:
    """GluonNLP's ``bert_12_768_12`` encoder for ``shape``, without weights (nothing is
    downloaded), its decoder and classifier left out."""
    encoder, _ = nlp.model.get_model(
        MODEL_NAME,
        dataset_name=None,
        vocab=vocab,
        pretrained=False,
        use_pooler=use_pooler,
        use_decoder=False,
        use_classifier=False,
        **_shape_kwargs(shape),
    )
    return encoder


def _shape_kwargs(shape: bert.BertShape) -> dict[str, Any]:
    """Overrides of GluonNLP's predefined bert_12_768_12 hyperparameters for other shapes."""
    if shape == bert.BERT_BASE:
        return {}
    return {
        "hparam_allow_override": True,
        "num_layers": shape.layers,
        "units": shape.hidden,
        "hidden_size": shape.intermediate,
        "num_heads": shape.heads,
        "max_length": shape.max_positions,
        "embed_size": shape.hidden,
    }


def _find_params(directory: Path) -> Path:
    found = sorted(directory.glob("*.params"))
    if not found:
        raise FileNotFoundError(
            f"no .params file in {directory}: save the BERTClassifier's parameters there "
            "with save_parameters() (nothing is downloaded)"
        )
    return found[0]
