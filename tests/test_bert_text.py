"""BERT uncased WordPiece tokenization from a local vocab.txt into a TextBatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.bert_text import BertTextEncoder
from data.samples import SAMPLE_VOCAB, write_vocab

ID = {token: i for i, token in enumerate(SAMPLE_VOCAB)}
CLS, SEP, PAD, UNK = ID["[CLS]"], ID["[SEP]"], ID["[PAD]"], ID["[UNK]"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


def ids(*tokens: str) -> list[int]:
    return [ID[t] for t in tokens]


def test_lowercase_wordpiece_and_framing(vocab: Path) -> None:
    encoder = BertTextEncoder(vocab, seq_len=12)
    batch = encoder.encode(["Unbelievable, Caf\u00e9!", "This movie was GOOD", "xyz"], [1, 0, 1])
    words = ids("un", "##believ", "##able", ",", "cafe", "!")
    assert batch.input_ids.tolist() == [
        [CLS, *words, SEP] + [PAD] * 4,
        [CLS, *ids("this", "movie", "was", "good"), SEP] + [PAD] * 6,
        [CLS, UNK, SEP] + [PAD] * 9,
    ]
    assert batch.attention_mask.tolist()[0] == [1] * 8 + [0] * 4
    assert batch.valid_length.tolist() == [8, 6, 3]
    assert batch.token_type_ids.tolist() == [[0] * 12] * 3
    assert batch.labels.tolist() == [1, 0, 1]
    for field in (batch.input_ids, batch.token_type_ids, batch.attention_mask, batch.labels):
        assert field.dtype == np.int64
    assert encoder.tokens("Caf\u00e9")[:3] == ["[CLS]", "cafe", "[SEP]"]


def test_html_breaks_become_tokens_and_long_texts_are_cut(vocab: Path) -> None:
    encoder = BertTextEncoder(vocab, seq_len=16)
    batch = encoder.encode(["A GREAT film.<br /><br />I loved it!"])
    br = ids("<", "br", "/", ">")
    # 16 word pieces: cut to 14 so that [CLS] and [SEP] fit
    assert batch.input_ids.tolist() == [
        [CLS, *ids("a", "great", "film", "."), *br, *br, *ids("i", "loved"), SEP]
    ]
    assert batch.valid_length.tolist() == [16]
    assert batch.labels.tolist() == [-1]  # no labels given


def test_same_ids_as_transformers_bert_tokenizer(vocab: Path) -> None:
    transformers = pytest.importorskip("transformers")
    texts = ["A GREAT film.<br /><br />I loved it!", "Unbelievable, Caf\u00e9!", "bad"]
    # transformers 5 ignores BertTokenizerFast(vocab_file=...) (a vocabulary of the special
    # tokens alone, everything else [UNK]); from_pretrained on the folder reads vocab.txt
    reference = transformers.BertTokenizerFast.from_pretrained(vocab.parent)
    want = reference(texts, max_length=10, truncation=True, padding="max_length")
    got = BertTextEncoder(vocab, seq_len=10).encode(texts, [0, 0, 0])
    assert got.input_ids.tolist() == want["input_ids"]
    assert got.attention_mask.tolist() == want["attention_mask"]
    assert got.token_type_ids.tolist() == want["token_type_ids"]


def test_bad_input(vocab: Path, tmp_path: Path) -> None:
    encoder = BertTextEncoder(vocab, seq_len=4)
    with pytest.raises(ValueError, match="2 texts but 3 labels"):
        encoder.encode(["a", "bad"], [0, 1, 1])
    with pytest.raises(TypeError, match="sequence of texts"):
        encoder.encode("a film")
    with pytest.raises(ValueError, match="seq_len must be at least 2"):
        BertTextEncoder(vocab, seq_len=1)
    with pytest.raises(FileNotFoundError, match="no vocabulary file"):
        BertTextEncoder(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"lacks the special tokens \[CLS\]"):
        BertTextEncoder(write_vocab(tmp_path / "v.txt", ("[PAD]", "[UNK]", "[SEP]", "a")))
