"""Lazy registry of workload implementations and the Python environment each needs.

Entries are import strings, resolved only inside the worker process that runs them, so a
missing or conflicting framework never breaks the harness or another backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench.spec import SpecError

#: Python environments, by name, as directories under the project root. ``main`` is the one
#: the ``bench`` command runs in; others hold backends whose dependencies conflict with it.
ENVIRONMENTS = {"main": ".venv"}

ALL_PRECISIONS = frozenset({"fp32", "fp16", "bf16"})


@dataclass(frozen=True)
class Entry:
    target: str
    env: str = "main"
    modes: frozenset[str] = frozenset({"train", "infer"})
    precisions: frozenset[str] = ALL_PRECISIONS


REGISTRY: dict[tuple[str, str], Entry] = {
    ("null", "torch"): Entry("models.null:NullWorkload"),
    ("ssd", "torch"): Entry("models.ssd.torch:SsdTorch"),
    ("bert", "torch"): Entry("models.bert.torch:BertTorch"),
}

#: Per backend, where to ask for framework versions (``bench env``).
FRAMEWORK_INFO = {"torch": "models.torch_common:torch_info"}


def lookup(workload: str, backend: str, mode: str | None = None) -> Entry:
    entry = REGISTRY.get((workload, backend))
    if entry is None:
        have = sorted(b for (w, b) in REGISTRY if w == workload)
        raise SpecError(
            f"no {backend} implementation of workload {workload!r}"
            + (f" (available: {', '.join(have)})" if have else "")
        )
    if mode is not None and mode not in entry.modes:
        raise SpecError(f"{workload} on {backend} supports {', '.join(sorted(entry.modes))} only")
    return entry


def load(target: str) -> object:
    """Import ``package.module:Attribute`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
