"""SQuAD v1.1: the JSON reader, BERT's sliding-window features, spans mapped back to answer
text, and exact match and F1 by the rules of the official v1.1 evaluation script.

Features follow Google's BERT ``run_squad.py`` (which GluonNLP's, NVIDIA's and MLPerf's
SQuAD scripts also follow): the question cut to ``max_query_len`` WordPiece tokens; each
window is ``[CLS] question [SEP] context [SEP]`` padded to ``seq_len``; windows over the
context start every ``doc_stride`` tokens until one reaches its end; a training window whose
answer is not wholly inside it points at ``[CLS]`` (position 0). Tokenization is BERT's
uncased WordPiece from a local ``vocab.txt`` through the ``tokenizers`` library (as
``data.bert_text``), whose character offsets map a predicted span straight back to the
context's own text. A token seen by several windows is scored only in the window where it has
the most context on both sides (``run_squad.py``'s "max context" rule).

Answer selection: per question, over its windows, the ``n_best`` highest start and end
logits; a span counts when both ends lie in the context, the end is not before the start,
it is at most ``max_answer_len`` tokens long and its start has its max context in that
window; the span with the highest start plus end logit wins.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.selection import DataError

#: Window settings of the BERT references (GluonNLP, NVIDIA, MLPerf).
SEQ_LEN, DOC_STRIDE, MAX_QUERY_LEN = 384, 128, 64
N_BEST, MAX_ANSWER_LEN = 20, 30
SPLIT_FILES = {"train": "train-v1.1.json", "dev": "dev-v1.1.json"}
#: The model inputs of a feature batch.
FEATURE_NAMES = ("input_ids", "token_type_ids", "attention_mask")


class SquadError(ValueError):
    """A file that is not SQuAD v1.1 JSON."""


@dataclass(frozen=True)
class Example:
    """One question: its id, text, context, and gold answers ``(text, start character)``."""

    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


@dataclass
class Features:
    """The windows of a list of examples, as arrays, with what maps them back.

    input_ids, token_type_ids, attention_mask: int64 [F, seq_len]; start_positions,
    end_positions: int64 [F] (the first gold answer's tokens, 0 where outside the window);
    example: int64 [F], the example each window belongs to; offsets: [F, seq_len, 2] the
    context characters of each context token (-1 elsewhere); max_context: bool [F, seq_len],
    whether a context token has its max context in this window.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    example: np.ndarray
    offsets: np.ndarray
    max_context: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def inputs(self, rows: slice | np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[rows] for name in FEATURE_NAMES}


def split_file(path: Path | str, split: str = "dev") -> Path:
    """The split's JSON file: ``path`` itself when it is a file, else ``{split}-v1.1.json``
    in the folder ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if split not in SPLIT_FILES:
        raise SquadError(f"split must be one of {', '.join(SPLIT_FILES)}, not {split!r}")
    found = path / SPLIT_FILES[split]
    if not found.is_file():
        raise SquadError(f"no {SPLIT_FILES[split]} in {path}")
    return found


def check_squad_run(path: Path, mode: str, scenario: str) -> None:
    """bert-qa's ``--data`` (its ``WorkloadInfo.data_check``): training reads a folder's
    train-v1.1.json (and, to accuracy, its dev-v1.1.json); an evaluation a folder's
    dev-v1.1.json or a JSON file. Raises :class:`DataError` naming the files missing."""
    if path.is_file() and mode == "infer":
        return
    needed = [SPLIT_FILES["train"]] if mode == "train" else []
    if mode == "infer" or scenario == "to-accuracy":
        needed.append(SPLIT_FILES["dev"])
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise DataError(
            f"bert-qa needs a folder with {' and '.join(missing)} (bench data download squad)"
        )


def read_squad(path: Path | str, split: str = "dev") -> list[Example]:
    """Every question of a SQuAD v1.1 file (or the split's file in a folder), in file order."""
    source = split_file(path, split)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))["data"]
        examples = []
        for article in data:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = tuple((a["text"], int(a["answer_start"])) for a in qa["answers"])
                    examples.append(Example(str(qa["id"]), qa["question"], context, answers))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SquadError(f"{source} is not SQuAD v1.1 JSON ({type(exc).__name__}: {exc})") from None
    for example in examples:
        for text, start in example.answers:
            if example.context[start : start + len(text)] != text:
                raise SquadError(f"{source}: answer {text!r} of {example.qid} is not at {start}")
    return examples


def window_starts(tokens: int, room: int, stride: int = DOC_STRIDE) -> list[tuple[int, int]]:
    """``(start, length)`` of each window over ``tokens`` context tokens, ``room`` of them
    per window, a new window every ``stride`` tokens until one reaches the end."""
    if room < 1:
        raise ValueError(f"no room for the context: {room} tokens per window")
    spans, start = [], 0
    while True:
        length = min(tokens - start, room)
        spans.append((start, length))
        if start + length >= tokens:
            return spans
        start += min(length, stride)


def _max_context(spans: Sequence[tuple[int, int]], index: int, position: int) -> bool:
    """Whether context token ``position`` has its most context (the smaller of the tokens
    before and after it, plus a hundredth of the window's length) in window ``index``."""
    best, best_score = None, 0.0
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if not start <= position <= end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best is None or score > best_score:
            best, best_score = i, score
    return best == index


class SquadFeaturizer:
    """Examples -> :class:`Features`, with uncased WordPiece from a local ``vocab.txt``."""

    def __init__(
        self,
        vocab_file: Path | str,
        seq_len: int = SEQ_LEN,
        doc_stride: int = DOC_STRIDE,
        max_query_len: int = MAX_QUERY_LEN,
    ) -> None:
        from tokenizers import BertWordPieceTokenizer

        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file {path}")
        vocab = path.read_text(encoding="utf-8").splitlines()
        ids = {token: i for i, token in enumerate(vocab)}
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in ids]
        if missing:
            raise ValueError(f"{path} lacks the special tokens {', '.join(missing)}")
        if seq_len < max_query_len + 4:
            raise ValueError(f"seq_len {seq_len} leaves no room beside a {max_query_len} query")
        self.cls_id, self.sep_id, self.pad_id = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
        self.seq_len, self.doc_stride, self.max_query_len = seq_len, doc_stride, max_query_len
        self._tokenizer = BertWordPieceTokenizer(str(path), lowercase=True)

    def _encode(self, texts: list[str]) -> list[Any]:
        return list(self._tokenizer.encode_batch(texts, add_special_tokens=False))

    def windows(self, example: Example) -> int:
        """How many windows the example's context makes."""
        question = self._encode([example.question])[0].ids[: self.max_query_len]
        context = self._encode([example.context])[0]
        room = self.seq_len - len(question) - 3
        return len(window_starts(len(context.ids), room, self.doc_stride))

    def features(self, examples: Sequence[Example]) -> Features:
        rows: dict[str, list[Any]] = collections.defaultdict(list)
        questions = self._encode([e.question for e in examples])
        # one tokenization per distinct context (SQuAD asks several questions of each)
        contexts = {c: None for c in (e.context for e in examples)}
        encoded = dict(zip(contexts, self._encode(list(contexts)), strict=True))
        for index, example in enumerate(examples):
            query = questions[index].ids[: self.max_query_len]
            context = encoded[example.context]
            offsets = context.offsets
            spans = window_starts(len(context.ids), self.seq_len - len(query) - 3, self.doc_stride)
            answer = _answer_tokens(example, offsets)
            for w in range(len(spans)):
                self._window(rows, index, query, context.ids, offsets, spans, w, answer)
        arrays = {k: np.asarray(v) for k, v in rows.items()}
        width = (0, self.seq_len)
        return Features(
            input_ids=arrays.get("input_ids", np.zeros(width, np.int64)).astype(np.int64),
            token_type_ids=arrays.get("token_type_ids", np.zeros(width, np.int64)).astype(np.int64),
            attention_mask=arrays.get("attention_mask", np.zeros(width, np.int64)).astype(np.int64),
            start_positions=arrays.get("start", np.zeros(0, np.int64)).astype(np.int64),
            end_positions=arrays.get("end", np.zeros(0, np.int64)).astype(np.int64),
            example=arrays.get("example", np.zeros(0, np.int64)).astype(np.int64),
            offsets=arrays.get("offsets", np.zeros((*width, 2), np.int64)).astype(np.int64),
            max_context=arrays.get("max_context", np.zeros(width, bool)).astype(bool),
        )

    def _window(
        self,
        rows: dict[str, list[Any]],
        index: int,
        query: list[int],
        context_ids: list[int],
        offsets: list[tuple[int, int]],
        spans: list[tuple[int, int]],
        w: int,
        answer: tuple[int, int] | None,
    ) -> None:
        start, length = spans[w]
        first = len(query) + 2  # position of the window's first context token
        ids = [self.cls_id, *query, self.sep_id, *context_ids[start : start + length], self.sep_id]
        pad = self.seq_len - len(ids)
        types = [0] * first + [1] * (length + 1) + [0] * pad
        char = np.full((self.seq_len, 2), -1, dtype=np.int64)
        char[first : first + length] = offsets[start : start + length]
        best = np.zeros(self.seq_len, dtype=bool)
        for p in range(length):
            best[first + p] = _max_context(spans, w, start + p)
        s = e = 0
        if answer is not None and start <= answer[0] and answer[1] < start + length:
            s, e = answer[0] - start + first, answer[1] - start + first
        rows["input_ids"].append(ids + [self.pad_id] * pad)
        rows["token_type_ids"].append(types)
        rows["attention_mask"].append([1] * len(ids) + [0] * pad)
        rows["start"].append(s)
        rows["end"].append(e)
        rows["example"].append(index)
        rows["offsets"].append(char)
        rows["max_context"].append(best)


def _answer_tokens(example: Example, offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The context tokens of the first gold answer: the first token ending after its first
    character, the last token starting before its end."""
    if not example.answers:
        return None
    text, begin = example.answers[0]
    end = begin + len(text)
    inside = [i for i, (a, b) in enumerate(offsets) if b > begin and a < end]
    return (inside[0], inside[-1]) if inside else None


def best_spans(
    examples: Sequence[Example],
    features: Features,
    logits: np.ndarray,
    n_best: int = N_BEST,
    max_answer_len: int = MAX_ANSWER_LEN,
) -> dict[str, str]:
    """``{question id: answer text}`` from start and end logits ``[F, seq_len, 2]`` (see the
    module's note on answer selection). A question with no valid span answers ``""``."""
    best: dict[int, tuple[float, str]] = {}
    for f in range(len(features)):
        index = int(features.example[f])
        context = examples[index].context
        start_logits, end_logits = logits[f, :, 0], logits[f, :, 1]
        starts = np.argsort(-start_logits, kind="stable")[:n_best]
        ends = np.argsort(-end_logits, kind="stable")[:n_best]
        offsets, max_context = features.offsets[f], features.max_context[f]
        for s in starts:
            if offsets[s, 0] < 0 or not max_context[s]:
                continue
            for e in ends:
                if offsets[e, 0] < 0 or e < s or e - s + 1 > max_answer_len:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if index not in best or score > best[index][0]:
                    best[index] = (score, context[offsets[s, 0] : offsets[e, 1]])
    return {example.qid: best[i][1] if i in best else "" for i, example in enumerate(examples)}


# -- scoring: the rules of the official SQuAD v1.1 evaluation script -------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(truth)


def f1_score(prediction: str, truth: str) -> float:
    """Harmonic mean of token precision and recall over the normalized answers' tokens."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(examples: Sequence[Example], predictions: dict[str, str]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent, each the best over a question's gold answers,
    averaged over every question (an unanswered question scores 0)."""
    if not examples:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    for example in examples:
        golds = [text for text, _ in example.answers]
        prediction = predictions.get(example.qid)
        if prediction is None or not golds:
            continue
        em += max(float(exact_match(prediction, g)) for g in golds)
        f1 += max(f1_score(prediction, g) for g in golds)
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f1 / len(examples)}


# -- evaluation: features in batches through a model's logits --------------------------------


def batches(features: Features, batch: int) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    for begin in range(0, len(features), batch):
        rows = slice(begin, begin + batch)
        yield rows, features.inputs(rows)


def window_settings(seq_len: int) -> tuple[int, int]:
    """Document stride and longest query for windows of ``seq_len`` tokens: the references'
    128 and 64 at 384 and from 384 up, a third and a sixth of a shorter window."""
    return min(DOC_STRIDE, seq_len // 3), min(MAX_QUERY_LEN, seq_len // 6)


def evaluate_spans(
    path: Path | str,
    vocab_file: Path | str,
    logits: Callable[[dict[str, np.ndarray]], np.ndarray],
    *,
    batch: int,
    seq_len: int = SEQ_LEN,
    max_questions: int | None = None,
) -> dict[str, Any]:
    """EM and F1 on the dev split of ``path`` (or its first ``max_questions`` questions): the
    windows (see :func:`window_settings`) through ``logits`` (inputs -> ``[B, seq_len, 2]``)
    in batches, best spans, scores. ``value`` is F1 as a fraction (the harness's metric
    scale)."""
    examples = read_squad(path, "dev")[:max_questions]
    stride, query = window_settings(seq_len)
    featurizer = SquadFeaturizer(vocab_file, seq_len, doc_stride=stride, max_query_len=query)
    features = featurizer.features(examples)
    out = np.zeros((len(features), seq_len, 2), dtype=np.float32)
    for rows, inputs in batches(features, batch):
        out[rows] = logits(inputs)
    scores = squad_scores(examples, best_spans(examples, features, out))
    return {
        "metric": "squad_f1",
        "value": scores["f1"] / 100.0,
        "exact_match": scores["exact_match"],
        "f1": scores["f1"],
        "samples": len(features),
        "questions": len(examples),
        "split": "SQuAD v1.1 dev",
    }


def read_features(
    path: Path | str, split: str, vocab_file: Path | str, seq_len: int
) -> tuple[list[Example], Features]:
    """Every question of the split and its windows (see :func:`window_settings`)."""
    examples = read_squad(path, split)
    stride, query = window_settings(seq_len)
    featurizer = SquadFeaturizer(vocab_file, seq_len, doc_stride=stride, max_query_len=query)
    return examples, featurizer.features(examples)


class FeatureStream:
    """Training batches of windows held in memory: the model inputs and the start and end
    positions, ``batch`` windows at a time in a seeded order, reshuffled each epoch (the
    last partial batch of an epoch is dropped)."""

    def __init__(self, features: Features, batch: int, seed: int = 0) -> None:
        if len(features) < batch:
            raise ValueError(f"{len(features)} windows cannot fill a batch of {batch}")
        self.features, self.batch = features, batch
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(features))
        self._at = 0
        #: Batches handed out so far.
        self.batches = 0

    def next(self) -> dict[str, np.ndarray]:
        if self._at + self.batch > len(self._order):
            self._order, self._at = self._rng.permutation(len(self.features)), 0
        rows = np.sort(self._order[self._at : self._at + self.batch])
        self._at += self.batch
        self.batches += 1
        out = self.features.inputs(rows)
        out["start_positions"] = self.features.start_positions[rows]
        out["end_positions"] = self.features.end_positions[rows]
        return out

    def read_facts(self) -> dict[str, Any]:
        return {
            "dataset": "SQuAD v1.1 train",
            "windows": len(self.features),
            "batch_size": self.batch,
            "loader": "windows built at set-up and held in memory; a seeded shuffle per epoch",
            "loader_workers": 0,
            "batches_read": self.batches,
            "epochs_read": round(self.batches * self.batch / len(self.features), 3),
        }

    def close(self) -> None:
        """Nothing to stop: no worker processes."""
