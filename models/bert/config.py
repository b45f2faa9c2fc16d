"""BERT-base facts shared by every framework path: sizes, the lab's hyperparameters, FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

from bench.run.workload import ShapeLabels, WorkloadInfo
from bench.schema.spec import RunSpec


@dataclass(frozen=True)
class BertShape:
    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    type_vocab: int = 2
    num_labels: int = 2


#: BERT-base uncased, as the workshop's BERT lab fine-tunes it.
BERT_BASE = BertShape()

#: The lab's fine-tuning settings (BERTAdam): lr, weight decay, warm-up steps, grad clip.
LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.01
WARMUP_STEPS = 50
GRAD_CLIP = 1.0
#: IMDB training reviews: one epoch of the lab sets the length of the linear decay.
EPOCH_SAMPLES = 25_000


@dataclass(frozen=True)
class BertSettings:
    """What a BERT workload is built with besides its run spec: the model's shape and the
    fine-tuning hyperparameters that tests vary (the rest are the lab's constants above)."""

    shape: BertShape = BERT_BASE
    learning_rate: float = LEARNING_RATE
    warmup_steps: int = WARMUP_STEPS


#: The lab's settings: BERT-base, lr 5e-5, 50 warm-up steps.
LAB_SETTINGS = BertSettings()


def forward_flops_per_sample(seq_len: int, shape: BertShape = BERT_BASE) -> float:
    """Matrix-multiply FLOPs (2 per multiply-add) of one sequence's forward pass.

    Per layer: Q, K, V and output projections (4 * 2*L*H*H), the feed-forward pair
    (2 * 2*L*H*I), attention scores and the weighted sum of values (2 * 2*L*L*H). Then the
    pooler (2*H*H) and classifier (2*H*C). Embedding look-ups, softmax, layer norms and
    activations are not matrix work and are left out, as is usual for MFU accounting.
    """
    length, hidden = seq_len, shape.hidden
    per_layer = (
        8 * length * hidden * hidden
        + 4 * length * hidden * shape.intermediate
        + 4 * length * length * hidden
    )
    head = 2 * hidden * hidden + 2 * hidden * shape.num_labels
    return float(shape.layers * per_layer + head)


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup`` steps, then linear
    decay to 0 at ``total`` steps (and 0 after)."""
    if step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


_HF_CHECKPOINT = (
    ("config.json",),
    (
        "model.safetensors",
        "pytorch_model.bin",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ),
)


def _flops(spec: RunSpec) -> tuple[float | None, str]:
    flops = forward_flops_per_sample(spec.seq_len)
    return flops, f"analytic: matrix multiplies of BERT at seq_len {spec.seq_len}"


INFO = WorkloadInfo(
    name="bert",
    flops=_flops,
    shape=ShapeLabels(field="seq_len", tag="s{0}", column="seq {0}", title="seq {0}"),
    epoch_samples=EPOCH_SAMPLES,
    epoch_dataset="IMDB train",
    # Matrix multiplies dominate. PyTorch runs them in full fp32 (BertTorch turns
    # torch.backends.cuda.matmul.allow_tf32 off); MXNet's cuBLAS GEMMs would use TF32 by
    # default on Ampere, so BertGluon sets NVIDIA_TF32_OVERRIDE=0 to match; ONNX Runtime's
    # CUDA provider gets use_tf32=0 (its default is 1). Every backend does full fp32.
    fp32_math={"torch": "fp32", "mxnet": "fp32", "onnxruntime": "fp32"},
    # transformers' save_pretrained() layout (ONNX Runtime exports from it); a BERTClassifier's
    # save_parameters() file for MXNet
    checkpoint={
        "torch": _HF_CHECKPOINT,
        "onnxruntime": _HF_CHECKPOINT,
        "mxnet": (("*.params",),),
    },
    data_check="data.checks:check_reviews_run",
    needs_vocab=True,
    served="models.bert.served:SERVED",
    datasets={"imdb": "data.imdb:SOURCE", "bert-vocab": "data.sources:BERT_VOCAB"},
)
