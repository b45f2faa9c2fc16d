"""The synthetic batch every bert-qa framework path times (numpy only)."""

from __future__ import annotations

import numpy as np

from data.squad import MAX_ANSWER_LEN
from data.synthetic import SEP_ID, TextBatch, text_batch
from models.bert_qa.config import SHAPE


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
