"""BERT uncased WordPiece tokenization from a local ``vocab.txt`` into a ``TextBatch``.

Uses the ``tokenizers`` library's fast ``BertWordPieceTokenizer`` (the tokenizer behind
``transformers``' ``BertTokenizerFast``): BERT's basic tokenization (text clean-up, CJK
characters split, lower-casing with accents stripped, punctuation split) then greedy
longest-match WordPiece with ``##`` continuations, unknown words as ``[UNK]``.

Each text becomes ``[CLS] tokens [SEP]``, truncated to ``seq_len`` (the tokens cut to
``seq_len - 2``, as GluonNLP's ``BERTSentenceTransform`` in the workshop lab) and padded
with ``[PAD]`` to ``seq_len``; token type ids are all 0 (one segment); the attention mask
is 1 on real tokens; ``valid_length`` counts them (GluonNLP's input).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from data.synthetic import TextBatch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


class BertTextEncoder:
    """Texts (and labels) -> a :class:`~data.synthetic.TextBatch` of ``seq_len`` tokens."""

    def __init__(self, vocab_file: Path | str, seq_len: int = 128, lowercase: bool = True) -> None:
        from tokenizers import BertWordPieceTokenizer

        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 ([CLS] and [SEP]), not {seq_len}")
        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file {path}")
        self.vocab = {
            token: i for i, token in enumerate(path.read_text(encoding="utf-8").splitlines())
        }
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"{path} lacks the special tokens {', '.join(missing)}")
        self.seq_len = seq_len
        self.pad_id = self.vocab["[PAD]"]
        self._tokenizer = BertWordPieceTokenizer(str(path), lowercase=lowercase)
        self._tokenizer.enable_truncation(max_length=seq_len)
        self._tokenizer.enable_padding(length=seq_len, pad_id=self.pad_id, pad_token="[PAD]")

    def tokens(self, text: str) -> list[str]:
        """The padded token strings of one text (for inspection)."""
        return list(self._tokenizer.encode(text).tokens)

    def encode(
        self, texts: Sequence[str], labels: Sequence[int] | npt.ArrayLike | None = None
    ) -> TextBatch:
        """Tokenize a batch; ``labels`` default to -1 (unknown)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        encodings = self._tokenizer.encode_batch(list(texts))
        shape = (len(encodings), self.seq_len)
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(shape)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64).reshape(shape)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(shape)
        if labels is None:
            target = np.full(len(encodings), -1, dtype=np.int64)
        else:
            target = np.asarray(labels, dtype=np.int64).reshape(-1)
            if target.shape[0] != len(encodings):
                raise ValueError(f"{len(encodings)} texts but {target.shape[0]} labels")
        return TextBatch(
            input_ids=ids,
            token_type_ids=types,
            attention_mask=mask,
            valid_length=mask.sum(axis=1),
            labels=target,
        )
