"""BERT question answering (SQuAD v1.1) facts shared by every framework path, importing no
framework or numpy (the harness reads them): the span head, the settings, FLOPs."""

from __future__ import annotations

from bench.run.workload import WorkloadInfo
from bench.schema.spec import RunSpec
from models.bert import config as bert

#: BERT-base uncased with a span head: two units per token (start and end logits).
SHAPE = bert.BERT_BASE
#: The fine-tuning settings of the workshop's BERT lab: BERTAdam (AdamW) lr 5e-5, weight
#: decay 0.01, grad clip 1.0, 50 warm-up steps then linear decay.
SETTINGS = bert.LAB_SETTINGS
#: Questions in SQuAD v1.1's train set (one epoch sets the length of the linear decay).
EPOCH_SAMPLES = 87_599


def forward_flops_per_sample(seq_len: int, shape: bert.BertShape = SHAPE) -> float:
    """Matrix-multiply FLOPs of one sequence's forward pass: BERT's encoder as
    :func:`models.bert.config.forward_flops_per_sample` counts it (its pooler and classifier
    taken out: the span head reads the sequence output) plus the span head, a two-unit dense
    layer on every token (2*L*H*2)."""
    hidden = shape.hidden
    classifier = 2 * hidden * hidden + 2 * hidden * shape.num_labels
    encoder = bert.forward_flops_per_sample(seq_len, shape) - classifier
    return float(encoder + 2 * seq_len * hidden * 2)


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
    data_check="data.squad:check_squad_run",
    needs_vocab=True,
    datasets={"squad": "data.sources:SQUAD", "bert-vocab": "data.sources:BERT_VOCAB"},
)
