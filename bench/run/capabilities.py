"""Capability rules: what a run asks of its workload and backend (a precision, ``--compile``,
fp16 training in a CUDA graph, ``--gpus``, ``--pretrained``, ``--data`` and its vocabulary,
``--save-weights``), checked once, before anything runs, against what each declares: the
backend's implementation in its registry :class:`~bench.run.registry.Entry`, the workload in
its framework-free :class:`~bench.run.workload.WorkloadInfo`. Nothing here names a workload
or a backend: a new one declares its facts and is checked like the others.

The spec checks only what its own fields say (ranges, choices, combinations of fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.run import registry
from bench.run.registry import Entry, run_label
from bench.run.workload import WorkloadInfo
from bench.schema.spec import RunSpec, SpecError


def check(spec: RunSpec, entry: Entry, info: WorkloadInfo) -> None:
    """Refuse what ``spec`` (its precision resolved) asks that ``entry``, the implementation
    of its workload on its backend, or ``info``, the workload's facts, do not declare. The
    dataset and vocabulary are checked on disk (layout and split lists, nothing decoded)."""
    _check_precision(spec, entry)
    _check_compile(spec, entry)
    _check_ranks(spec, entry)
    _check_pretrained(spec, info)
    _check_data(spec, entry, info)


def check_save_weights(spec: RunSpec, save_weights: bool) -> None:
    """``--save-weights``: only a training run has trained weights to save, and only an
    implementation that declares it writes them in the layout ``--pretrained`` reads."""
    if not save_weights:
        return
    if spec.mode != "train":
        raise SpecError(
            f"--save-weights saves the weights a training run trained: {run_label(spec)} is an "
            f"{spec.mode} run (use --mode train)"
        )
    if not registry.lookup(spec.workload, spec.backend).saves_weights:
        raise SpecError(
            f"--save-weights: {spec.workload} on {spec.backend} cannot save its weights for "
            "--pretrained yet"
        )


def _check_precision(spec: RunSpec, entry: Entry) -> None:
    if spec.precision not in entry.precisions:
        raise SpecError(
            f"{spec.workload} on {spec.backend} does not support {spec.precision}: "
            f"choose from {', '.join(sorted(entry.precisions))}"
        )
    # fp16 training in a CUDA graph only where the loss scaling never reads the host
    host_read = entry.fp16_train_host_read
    if spec.cuda_graphs and spec.mode == "train" and spec.precision == "fp16" and host_read:
        raise SpecError(
            f"fp16 training on {spec.backend} cannot be captured in a CUDA graph: "
            f"{host_read}; use bf16 or fp32, or drop --cuda-graphs"
        )


def _check_compile(spec: RunSpec, entry: Entry) -> None:
    if spec.compile == "off" or entry.compiles:
        return
    by_backend = _backend_entries()
    compiling = [b for b, entries in by_backend.items() if all(e.compiles for e in entries)]
    own = dict.fromkeys(e.own_graph for es in by_backend.values() for e in es if e.own_graph)
    plural = "s" if len(compiling) > 1 else ""
    raise SpecError(
        f"compile applies to the {words(compiling)} backend{plural}: {spec.backend} builds "
        f"its own graph ({', '.join(own)})"
    )


def _check_ranks(spec: RunSpec, entry: Entry) -> None:
    """``--gpus`` where the implementation uses several devices. A backend or workload that
    never does is told where ``--gpus`` runs; a pair that does not, to drop it."""
    if spec.gpus is None or entry.multi_device is not None:
        return
    pairs = [pair for pair, e in registry.REGISTRY.items() if e.multi_device is not None]
    backends = [b for b in registry.backend_names() if any(b == pb for _, pb in pairs)]
    workloads = [w for w in registry.workload_names() if any(w == pw for pw, _ in pairs)]
    if spec.backend in backends and spec.workload in workloads:
        raise SpecError(f"{spec.backend} runs {spec.workload} on one device: drop --gpus")
    raise SpecError(
        f"--gpus runs the {words(backends)} paths of {words(workloads)}, not "
        f"{spec.workload} on {spec.backend}"
    )


def _check_pretrained(spec: RunSpec, info: WorkloadInfo) -> None:
    if spec.pretrained is None:
        return
    directory = Path(spec.pretrained)
    if not directory.is_dir():
        raise SpecError(f"--pretrained directory {spec.pretrained} does not exist")
    missing = info.missing_checkpoint(spec.backend, directory)
    if missing is not None:
        raise SpecError(
            f"--pretrained {spec.pretrained} holds no {spec.workload} checkpoint for "
            f"{spec.backend}: expected {missing}"
        )


def _check_data(spec: RunSpec, entry: Entry, info: WorkloadInfo) -> None:
    """A ``--data`` path the workload reads on this backend, holding what the run reads
    (the workload's ``data_check``: split lists, index, files; nothing decoded), and the
    vocabulary it tokenizes with: an empty or malformed dataset is refused here, before a
    worker starts, like a missing one."""
    if spec.data is None:
        return
    if info.data_check is None or not entry.reads_data:
        readers = [
            (w, b)
            for (w, b), e in registry.REGISTRY.items()
            if e.reads_data and registry.workload_info(w).data_check is not None
        ]
        workloads = [w for w in registry.workload_names() if any(w == rw for rw, _ in readers)]
        backends = [b for b in registry.backend_names() if any(b == rb for _, rb in readers)]
        raise SpecError(
            f"--data runs {words(workloads)} on {words(backends)}, not {spec.workload} on "
            f"{spec.backend}"
        )
    from data.selection import DataError  # the dataset layer: only for runs on a dataset

    path = Path(spec.data)
    if not path.exists():
        raise SpecError(f"--data {spec.data} does not exist")
    try:
        registry.load(info.data_check)(path, spec.mode, spec.scenario)
    except DataError as exc:  # said once: "--data PATH: what is wrong", not PATH twice
        raise SpecError(f"--data {spec.data}: {str(exc).removeprefix(f'{path}: ')}") from None
    if info.needs_vocab:
        _check_vocab(spec)


def _check_vocab(spec: RunSpec) -> None:
    if spec.vocab:
        if not Path(spec.vocab).is_file():
            raise SpecError(f"--vocab: vocabulary file {spec.vocab} does not exist")
    elif spec.pretrained:
        vocab = Path(spec.pretrained) / "vocab.txt"
        if not vocab.is_file():
            raise SpecError(
                f"vocabulary file {vocab} does not exist: BERT on a dataset reads the "
                "--pretrained directory's vocab.txt, or give --vocab FILE"
            )
    else:
        raise SpecError(
            "BERT on a dataset needs its WordPiece vocabulary: --vocab FILE, or vocab.txt "
            "in the --pretrained directory"
        )


def _backend_entries() -> dict[str, list[Entry]]:
    """Each registered backend's implementations, backends in ``backend_names`` order."""
    entries: dict[str, list[Entry]] = {b: [] for b in registry.backend_names()}
    for (_, backend), entry in registry.REGISTRY.items():
        entries[backend].append(entry)
    return entries


def words(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: the names in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
