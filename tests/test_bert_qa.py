"""BERT question answering on PyTorch and ONNX Runtime: the span head's size and FLOPs, the
synthetic batch, training and inference at a tiny size, the same logits from ONNX Runtime as
from PyTorch, and SQuAD training and evaluation on the project's sample file."""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertForQuestionAnswering

from bench.run import registry
from bench.run.store import new_record
from bench.schema.spec import RunSpec
from data import squad
from data.squad_sample import write_squad_sample, write_squad_vocab
from models.bert import config as bert
from models.bert.torch import base_config
from models.bert_qa import config as qa
from models.bert_qa.common import qa_batch
from models.bert_qa.onnx import BertQaOnnx
from models.bert_qa.torch import BertQaTorch

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)


def spec(**kw):
    return RunSpec(**{"workload": "bert-qa", "device": "cpu", "batch": 4, "seq_len": 32, **kw})


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("squad")
    write_squad_sample(root / "dev-v1.1.json")
    write_squad_sample(root / "train-v1.1.json")
    return root, write_squad_vocab(root / "vocab.txt")


def test_span_head_parameter_count_and_flops_at_384():
    with torch.device("meta"):
        model = BertForQuestionAnswering(base_config()).eval()
        ids = torch.zeros(1, 384, dtype=torch.long)
    # BERT-base without its pooler, and a 768 x 2 span head
    assert sum(p.numel() for p in model.parameters()) == 108_893_186
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids)
    assert qa.forward_flops_per_sample(384) == counter.get_total_flops() == 70_666_813_440
    flops, source = registry.workload_info("bert-qa").flops(spec(seq_len=384))
    assert flops == 70_666_813_440 and "span head" in source


def test_synthetic_batch_frames_a_question_and_a_context():
    batch = qa_batch(16, 40, seed=3)
    for i in range(16):
        length = int(batch.valid_length[i])
        types = batch.token_type_ids[i]
        context = np.flatnonzero(types)
        assert batch.input_ids[i, context[0] - 1] == 102 and batch.input_ids[i, length - 1] == 102
        assert context[-1] == length - 1 and not types[length:].any()
        start, end = batch.labels[i]
        assert context[0] <= start <= end <= length - 2 and end - start < squad.MAX_ANSWER_LEN
    again = qa_batch(16, 40, seed=3)
    assert np.array_equal(again.labels, batch.labels)
    with pytest.raises(ValueError, match="at least 10"):
        qa_batch(1, 9)


def test_training_loss_falls_on_a_fixed_batch():
    settings = bert.BertSettings(shape=SMALL, learning_rate=1e-3, warmup_steps=1)
    wl = BertQaTorch(spec(mode="train", batch=8), settings)
    wl.setup()
    losses = [float(wl.step()) for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0]
    assert set(wl.step_inputs) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "start_positions",
        "end_positions",
    }
    assert wl.scheduler.lr_lambdas[0](0) == 1.0  # one warm-up step


def test_inference_gives_start_and_end_logits():
    wl = BertQaTorch(spec(include_h2d=True), SMALL_SETTINGS)
    wl.setup()
    logits = wl.step()
    assert logits.shape == (4, 32, 2)
    wl.stage_samples(6)
    assert wl.infer_samples([5, 0, 2]).shape == (3, 32, 2)
    assert wl.details()["parameters"] == sum(p.numel() for p in wl.model.parameters())


def test_onnx_runtime_gives_the_pytorch_logits(tmp_path):
    wl = BertQaOnnx(
        RunSpec(workload="bert-qa", backend="onnxruntime", device="cpu", batch=3, seq_len=32),
        cache_dir=tmp_path,
        settings=SMALL_SETTINGS,
    )
    wl.setup()  # verifies its own outputs against the source model first
    got = wl.step().numpy().copy()
    source = wl.source_model()  # the same seeded weights
    names = ("input_ids", "attention_mask", "token_type_ids")
    inputs = [wl.host_inputs[n] for n in names]
    with torch.no_grad():
        want = source(*inputs).numpy()
    assert got.shape == want.shape == (3, 32, 2)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert sum(p.numel() for p in source.parameters()) == 2_024_834
    wl.stage_samples(4)
    assert wl.infer_samples([3, 1]).shape == (2, 32, 2)


def test_training_and_evaluation_on_squad(sample):
    root, vocab = sample
    settings = bert.BertSettings(shape=SMALL, learning_rate=1e-3, warmup_steps=1)
    wl = BertQaTorch(
        spec(mode="train", batch=4, seq_len=48, data=str(root), vocab=str(vocab)), settings
    )
    wl.setup()
    losses = [float(wl.step()) for _ in range(5)]
    assert all(np.isfinite(losses)) and len(wl.data_wait_s) == 5 + wl.setup_steps
    assert wl.batches.read_facts()["windows"] == 10
    result = wl.evaluate()
    examples = squad.read_squad(root)
    assert (result["questions"], result["samples"], result["metric"]) == (6, 10, "squad_f1")
    assert 0.0 <= result["exact_match"] <= result["f1"] <= 100.0
    assert result["value"] == pytest.approx(result["f1"] / 100)
    assert wl.model.training  # evaluate() restores the training flag
    # the same figures from the model's logits scored directly
    _, features = squad.read_features(root, "dev", vocab, 48)
    with torch.inference_mode():
        wl.model.eval()
        inputs = {k: torch.from_numpy(v) for k, v in features.inputs(slice(None)).items()}
        out = wl.model(**inputs)
        logits = torch.stack([out.start_logits, out.end_logits], -1).numpy()
    scores = squad.squad_scores(examples, squad.best_spans(examples, features, logits))
    assert scores["f1"] == pytest.approx(result["f1"], abs=1e-6)
    assert scores["exact_match"] == pytest.approx(result["exact_match"], abs=1e-6)


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_steps_and_queries_read_nothing_on_the_host(mode, sample):
    """The span head's steps pass the mask in the form BERT's do: no host read, synthetic or
    on SQuAD windows, nor when LoadGen's queries gather staged samples."""
    from models.torch_syncs import count_host_syncs

    root, vocab = sample
    for extra in ({}, {"data": str(root), "vocab": str(vocab)}):
        wl = BertQaTorch(spec(mode=mode, **extra), SMALL_SETTINGS)
        wl.setup()
        wl.open_data()
        try:
            assert count_host_syncs(wl.step, wl.device, wl.sync).count == 0
            if mode == "infer" and not extra:
                wl.stage_samples(6)
                query = functools.partial(wl.infer_samples, [4, 1])
                assert count_host_syncs(query, wl.device, wl.sync).count == 0
        finally:
            wl.teardown()


def test_a_squad_run_records_that_it_reads_without_loader_workers(sample):
    """SQuAD windows are held in memory: the record says 0 loader workers, whatever
    --loader-workers says (it does not apply)."""
    from bench.run.envinfo import collect
    from bench.run.loop import Measurement
    from bench.run.worker import fill_data

    root, vocab = sample
    run = spec(mode="train", data=str(root), vocab=str(vocab), loader_workers=2)
    wl = BertQaTorch(run, SMALL_SETTINGS)
    wl.setup()
    wl.open_data()
    wl.step()
    record = new_record(run, collect([]))
    fill_data(record, wl, Measurement(latencies_s=[0.1], window_s=0.1, warmup_s=0.0))
    wl.teardown()
    assert record.data is not None and record.data.loader_workers == 0
    assert record.data.details["dataset"] == "SQuAD v1.1 train"
