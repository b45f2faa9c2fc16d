"""A tiny SQuAD v1.1 file written by the project, for tests and smoke runs, and a WordPiece
vocabulary holding all its words.

Three articles: a short paragraph with three questions (one with several gold answers); a
long paragraph of the words ``word0`` .. ``word99`` (100 context tokens, so more than two
windows at the test's window sizes) whose answer ``word36`` .. ``word42`` crosses the end
of the first window; and a paragraph with punctuation and articles in its answers.
Deterministic: the same call writes the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from data.samples import write_vocab

#: Words of the long paragraph; its answer's first and last word.
LONG_WORDS = 100
LONG_ANSWER = (36, 42)

_SHORT = (
    "The harness measures training and inference of two models on three frameworks. "
    "It was written in the year 2024 by a small team in Berlin."
)
_PUNCT = "Paris, the capital of France, has the Louvre: a museum of art (and history)."


def _qa(qid: str, question: str, context: str, *answers: str) -> dict[str, Any]:
    found = [{"text": a, "answer_start": context.index(a)} for a in answers]
    return {"id": qid, "question": question, "answers": found}


def squad_sample() -> dict[str, Any]:
    """The sample file's JSON document."""
    long_context = " ".join(f"word{i}" for i in range(LONG_WORDS)) + "."
    first, last = LONG_ANSWER
    answer = " ".join(f"word{i}" for i in range(first, last + 1))
    articles = [
        (
            "Harness",
            _SHORT,
            [
                _qa(
                    "q-short-1", "What does the harness measure?", _SHORT, "training and inference"
                ),
                _qa("q-short-2", "In which year was it written?", _SHORT, "2024", "the year 2024"),
                _qa("q-short-3", "Where is the team?", _SHORT, "Berlin", "in Berlin"),
            ],
        ),
        (
            "Words",
            long_context,
            [_qa("q-long-1", "Which words cross the window?", long_context, answer)],
        ),
        (
            "Paris",
            _PUNCT,
            [
                _qa("q-punct-1", "What is Paris?", _PUNCT, "the capital of France"),
                _qa("q-punct-2", "What is the Louvre?", _PUNCT, "a museum of art (and history)"),
            ],
        ),
    ]
    return {
        "version": "1.1",
        "data": [
            {"title": title, "paragraphs": [{"context": context, "qas": qas}]}
            for title, context, qas in articles
        ],
    }


def write_squad_sample(path: Path | str) -> Path:
    """Write the sample as a SQuAD v1.1 JSON file."""
    path = Path(path)
    path.write_text(json.dumps(squad_sample(), indent=1) + "\n", encoding="utf-8")
    return path


def write_squad_vocab(path: Path | str) -> Path:
    """A ``vocab.txt`` of BERT's special tokens and every lower-cased word and punctuation
    mark of the sample, so that each is one WordPiece token."""
    text = json.dumps(squad_sample())
    words = sorted({w.lower() for w in re.findall(r"\w+|[^\w\s]", _all_text(text))})
    return write_vocab(Path(path), ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words))


def _all_text(document: str) -> str:
    data = json.loads(document)["data"]
    parts = []
    for article in data:
        for paragraph in article["paragraphs"]:
            parts.append(paragraph["context"])
            parts += [qa["question"] for qa in paragraph["qas"]]
    return " ".join(parts)
