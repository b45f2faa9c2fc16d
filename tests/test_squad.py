"""SQuAD v1.1: the reader, sliding-window features on the project's sample file, spans mapped
back to answer text, EM/F1 against an independent scorer, and ``bench data download squad``."""

import json
import re
import string
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench import datasets
from bench.cli import main
from data import squad
from data.squad_sample import LONG_ANSWER, LONG_WORDS, write_squad_sample, write_squad_vocab

#: Small windows, so that the sample's long paragraph spans several (squad.window_settings).
SEQ, STRIDE, QUERY = 48, 16, 8


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("squad")
    write_squad_sample(root / "dev-v1.1.json")
    return root, write_squad_vocab(root / "vocab.txt")


@pytest.fixture(scope="module")
def featurized(sample):
    root, vocab = sample
    examples = squad.read_squad(root)
    featurizer = squad.SquadFeaturizer(vocab, seq_len=SEQ, doc_stride=STRIDE, max_query_len=QUERY)
    return examples, featurizer, featurizer.features(examples)


def gold_logits(features: squad.Features) -> np.ndarray:
    """10 at the gold start and end of every window that holds the answer, 0 elsewhere."""
    logits = np.zeros((len(features), SEQ, 2), dtype=np.float32)
    for f in range(len(features)):
        if features.start_positions[f]:
            logits[f, features.start_positions[f], 0] = 10.0
            logits[f, features.end_positions[f], 1] = 10.0
    return logits


def test_window_settings():
    assert squad.window_settings(384) == (128, 64) == (squad.DOC_STRIDE, squad.MAX_QUERY_LEN)
    assert squad.window_settings(512) == (128, 64)
    assert squad.window_settings(SEQ) == (STRIDE, QUERY)


def test_reader_and_sample(sample):
    root, _ = sample
    examples = squad.read_squad(root / "dev-v1.1.json")
    assert [e.qid for e in examples] == [
        "q-short-1",
        "q-short-2",
        "q-short-3",
        "q-long-1",
        "q-punct-1",
        "q-punct-2",
    ]
    assert examples[1].answers == (("2024", 106), ("the year 2024", 97))
    assert squad.read_squad(root) == examples  # a folder: its dev-v1.1.json


def test_long_context_windows_equal_the_hand_count(featurized):
    examples, featurizer, features = featurized
    long = examples[3]
    # "which words cross the window ?" is 6 tokens: 48 - 6 - 3 = 39 context tokens a window.
    # 101 context tokens (word0 .. word99 and the period): windows start at 0, 16, 32, 48 and
    # 64; the last (tokens 64 .. 100, 37 of them) reaches the end. So 5 windows.
    assert featurizer.windows(long) == 5
    assert squad.window_starts(LONG_WORDS + 1, 39, STRIDE) == [
        (0, 39),
        (16, 39),
        (32, 39),
        (48, 39),
        (64, 37),
    ]
    assert int((features.example == 3).sum()) == 5
    assert all(featurizer.windows(e) == 1 for i, e in enumerate(examples) if i != 3)
    assert len(features) == 10


def test_answer_across_a_window_boundary_is_labelled_where_it_fits(featurized):
    _, _, features = featurized
    rows = np.flatnonzero(features.example == 3)
    first, last = LONG_ANSWER  # tokens 36 .. 42: the first window ends at token 38
    query = 6
    starts = features.start_positions[rows].tolist()
    ends = features.end_positions[rows].tolist()
    # windows 0 and 3, 4 do not hold the whole answer: [CLS]; windows 1 and 2 do
    assert starts == [0, first - 16 + query + 2, first - 32 + query + 2, 0, 0]
    assert ends == [0, last - 16 + query + 2, last - 32 + query + 2, 0, 0]
    window = rows[1]
    ids, types = features.input_ids[window], features.token_type_ids[window]
    assert ids[0] == 2 and ids[query + 1] == 3 and ids[SEQ - 1] == 3  # [CLS], [SEP], [SEP]
    assert types.tolist() == [0] * (query + 2) + [1] * (SEQ - query - 2)
    assert features.attention_mask[window].all()
    # token 36 has its most context in window 1 (20 tokens before it, 18 after)
    assert features.max_context[window, starts[1]]
    assert not features.max_context[rows[2], starts[2]]


def test_gold_spans_score_100(featurized):
    examples, _, features = featurized
    predictions = squad.best_spans(examples, features, gold_logits(features))
    assert predictions["q-long-1"] == " ".join(f"word{i}" for i in range(36, 43))
    assert predictions["q-punct-2"] == "a museum of art (and history)"
    assert squad.squad_scores(examples, predictions) == {"exact_match": 100.0, "f1": 100.0}


def test_spans_longer_than_the_limit_or_outside_the_context_are_skipped(featurized):
    examples, _, features = featurized
    logits = np.full((len(features), SEQ, 2), -10.0, dtype=np.float32)
    row = int(np.flatnonzero(features.example == 0)[0])
    logits[row, 0, :] = 50.0  # [CLS]: not in the context
    logits[row, 9, 0] = 20.0  # "the" of "The harness ..."
    logits[row, 11, 1] = 5.0
    logits[row, 30, 1] = 30.0  # a span of 22 tokens: over the limit of 4 below
    got = squad.best_spans(examples, features, logits, max_answer_len=4)
    assert got["q-short-1"] == "harness measures training"


def independent_scores(
    gold: dict[str, list[str]], predicted: dict[str, str]
) -> tuple[float, float]:
    """Written for this test from the official v1.1 evaluation rules, not from data.squad."""

    def tokens(text: str) -> list[str]:
        text = text.lower().translate(str.maketrans("", "", string.punctuation))
        return [w for w in text.split() if w not in ("a", "an", "the")]

    em_total = f1_total = 0.0
    for qid, answers in gold.items():
        guess = tokens(predicted.get(qid, ""))
        em_total += max(guess == tokens(a) for a in answers)
        best = 0.0
        for answer in answers:
            truth = tokens(answer)
            same = sum(min(n, Counter(truth)[w]) for w, n in Counter(guess).items())
            if same:
                p, r = same / len(guess), same / len(truth)
                best = max(best, 2 * p * r / (p + r))
        f1_total += best
    return 100 * em_total / len(gold), 100 * f1_total / len(gold)


WRONG = {
    "q-short-1": "Training, and the INFERENCE!",  # exact after normalization
    "q-short-2": "in 2024",  # partial against "2024" and "the year 2024"
    "q-short-3": "a small team",  # no overlap
    "q-long-1": "word36 word37 word38 word99",  # 3 of 4 right, 3 of 7 gold
    "q-punct-1": "capital capital of France",  # a repeated token counts once
    # q-punct-2 unanswered
}


def test_scores_of_wrong_predictions_equal_the_independent_scorer(featurized):
    examples, _, _ = featurized
    gold = {e.qid: [a for a, _ in e.answers] for e in examples}
    em, f1 = independent_scores(gold, WRONG)
    got = squad.squad_scores(examples, WRONG)
    assert got["exact_match"] == pytest.approx(em, abs=1e-9)
    assert got["f1"] == pytest.approx(f1, abs=1e-9)
    # and by hand: one exact match of six; F1 per question 1, 2/3, 0, 6/11, 6/7, 0
    assert got["exact_match"] == pytest.approx(100 / 6)
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 6 / 11 + 6 / 7) / 6)


def test_normalization_rules():
    assert squad.normalize_answer("  The  Louvre's (a) museum!! ") == "louvres museum"
    assert squad.normalize_answer("Anthem an theatre") == "anthem theatre"
    assert squad.f1_score("", "x") == 0.0 and squad.exact_match("A", "")


def test_evaluate_spans_through_a_logits_function(sample, featurized):
    root, vocab = sample
    _, _, features = featurized
    by_ids = {f.tobytes(): gold_logits(features)[i] for i, f in enumerate(features.input_ids)}

    def logits(inputs):
        return np.stack([by_ids[row.tobytes()] for row in inputs["input_ids"]])

    out = squad.evaluate_spans(root, vocab, logits, batch=3, seq_len=SEQ, max_questions=None)
    assert out["f1"] == out["exact_match"] == 100.0 and out["value"] == 1.0
    assert (out["samples"], out["questions"]) == (10, 6)


def test_bad_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(squad.SquadError, match="no dev-v1.1.json"):
        squad.read_squad(tmp_path)
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    with pytest.raises(squad.SquadError, match="not SQuAD v1.1 JSON"):
        squad.read_squad(bad)
    doc = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "abc",
                        "qas": [
                            {
                                "id": "1",
                                "question": "q",
                                "answers": [{"text": "b", "answer_start": 0}],
                            }
                        ],
                    }
                ]
            }
        ]
    }
    bad.write_text(json.dumps(doc))
    with pytest.raises(squad.SquadError, match="is not at 0"):
        squad.read_squad(bad)


def test_download_squad_offline_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["data", "download", "squad", "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert re.match(r"bench: error: cannot reach rajpurkar\.github\.io", err)
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()
    names = [a.name for a in datasets.sources()["squad"].archives]
    assert names == ["squad-v1.1/train-v1.1.json", "squad-v1.1/dev-v1.1.json"]


def test_runs_on_squad_check_its_files_before_starting(sample, tmp_path: Path):
    from bench.run.runner import prepare
    from bench.schema.spec import RunSpec, SpecError

    root, vocab = sample  # dev-v1.1.json only

    def spec(**kw):
        fields = {"workload": "bert-qa", "device": "cpu", "vocab": str(vocab), **kw}
        return RunSpec(**fields)

    def check_data(run: RunSpec) -> None:
        prepare(run, gpus=[])

    check_data(spec(scenario="evaluate", data=str(root)))
    check_data(spec(scenario="evaluate", data=str(root / "dev-v1.1.json")))
    with pytest.raises(SpecError, match="needs a folder with train-v1.1.json"):
        check_data(spec(mode="train", data=str(root)))
    with pytest.raises(SpecError, match="needs a folder with dev-v1.1.json"):
        check_data(spec(scenario="evaluate", data=str(tmp_path)))
    with pytest.raises(SpecError, match="WordPiece vocabulary"):
        check_data(spec(scenario="evaluate", data=str(root), vocab=None))
