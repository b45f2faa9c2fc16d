"""BERT question answering (SQuAD v1.1) facts shared by every framework path: the span head,
the window settings of NVIDIA's and MLPerf's BERT references, FLOPs and the synthetic batch."""

from __future__ import annotations

import numpy as np

from bench.run.spec import RunSpec
from bench.run.workload import WorkloadInfo
from data.synthetic import SEP_ID, TextBatch, text_batch
from models.bert import config as bert

#: BERT-base uncased with a span head: two units per token (start and end logits).
SHAPE = bert.BERT_BASE
#: The fine-tuning optimizer of the workshop's BERT lab (BERTAdam, lr 5e-5, wd 0.01, clip 1.0),
#: as GluonNLP's SQuAD script also uses it; the warm-up is the lab's.
SETTINGS = bert.LAB_SETTINGS
#: Window settings of SQuAD v1.1 in GluonNLP's, NVIDIA's and MLPerf's BERT scripts.
SEQ_LEN, DOC_STRIDE, MAX_QUERY_LEN = 384, 128, 64
#: Post-processing: candidates per end, longest answer in tokens.
N_BEST, MAX_ANSWER_LEN = 20, 30
#: Questions in SQuAD v1.1's train set (one epoch sets the length of the linear decay).
EPOCH_SAMPLES = 87_599
#: MLPerf's BERT-large target; BERT-base fine-tuned reaches about 88 F1.
MLPERF_F1 = 90.874


def forward_flops_per_sample(seq_len: int, shape: bert.BertShape = SHAPE) -> float:
    """Matrix-multiply FLOPs of one sequence's forward pass: BERT's encoder as
    :func:`models.bert.config.forward_flops_per_sample` counts it (its pooler and classifier
    taken out: the span head reads the sequence output) plus the span head, a two-unit dense
    layer on every token (2*L*H*2)."""
    hidden = shape.hidden
    classifier = 2 * hidden * hidden + 2 * hidden * shape.num_labels
    encoder = bert.forward_flops_per_sample(seq_len, shape) - classifier
    return float(encoder + 2 * seq_len * hidden * 2)


def qa_batch(
    count: int, seq_len: int, vocab_size: int = SHAPE.vocab_size, seed: int = 0
) -> TextBatch:
    """``count`` seeded sequences framed as ``[CLS] question [SEP] context [SEP]``: a
    question of a quarter of the real tokens (segment 0), the rest context (segment 1), and
    ``labels`` [count, 2] the start and end token of an answer of 1 to 30 tokens inside the
    context."""
    if seq_len < 10:
        raise ValueError(f"seq_len must be at least 10 for a question and a context, not {seq_len}")
    base = text_batch(count, seq_len, vocab_size=vocab_size, num_labels=1, seed=seed)
    rng = np.random.default_rng(seed + 1)
    lengths = base.valid_length
    question = np.maximum(1, (lengths - 3) // 4)
    ids = base.input_ids.copy()
    rows = np.arange(count)
    ids[rows, question + 1] = SEP_ID  # after the question
    positions = np.arange(seq_len)[None, :]
    types = ((positions > question[:, None] + 1) & (positions < lengths[:, None])).astype(np.int64)
    first = question + 2  # first context token
    last = lengths - 2  # last context token
    start = first + (rng.random(count) * (last - first + 1)).astype(np.int64)
    span = 1 + (rng.random(count) * MAX_ANSWER_LEN).astype(np.int64)
    end = np.minimum(start + span - 1, last)
    return TextBatch(
        input_ids=ids,
        token_type_ids=types,
        attention_mask=base.attention_mask,
        valid_length=lengths,
        labels=np.stack([start, end], axis=1).astype(np.int64),
    )


def _flops(spec: RunSpec) -> tuple[float | None, str]:
    flops = forward_flops_per_sample(spec.seq_len)
    return flops, f"analytic: matrix multiplies of BERT with a span head at seq_len {spec.seq_len}"


INFO = WorkloadInfo(
    name="bert-qa",
    flops=_flops,
    shape=bert.INFO.shape,
    epoch_samples=EPOCH_SAMPLES,
    epoch_dataset="SQuAD v1.1 train (questions)",
    # as BERT: every backend does full fp32 (see models.bert.config.INFO)
    fp32_math=bert.INFO.fp32_math,
    checkpoint=bert.INFO.checkpoint,
)
