"""The framework-free half of the registry: the facts each workload declares, loaded by
import string from modules that import no framework, and the run label built from them.

It sits below the run record (which names each run by its label) and the scenarios;
:mod:`bench.run.registry` adds the implementations and scenarios above them.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from bench.run.spec import RunSpec, SpecError
from bench.run.workload import WorkloadInfo

#: Each workload's declared facts, from modules that import no framework.
WORKLOAD_INFO: dict[str, str] = {
    "null": "models.null:INFO",
    "ssd": "models.ssd.common:INFO",
    "bert": "models.bert.config:INFO",
    "bert-qa": "models.bert_qa.config:INFO",
}


def load(target: str) -> Any:
    """Import ``package.module:Attribute`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def workload_info(workload: str) -> WorkloadInfo:
    """The facts workload ``workload`` declares (no framework is imported)."""
    target = WORKLOAD_INFO.get(workload)
    if target is None:
        raise SpecError(f"unknown workload {workload!r}")
    return _load_info(target)


@functools.cache
def _load_info(target: str) -> WorkloadInfo:
    info = load(target)
    if not isinstance(info, WorkloadInfo):
        raise TypeError(f"{target} is not a WorkloadInfo")
    return info


def run_label(spec: RunSpec) -> str:
    """A short name for file names and progress lines."""
    return spec.label_for(workload_info(spec.workload).shape_text(spec, "tag"))
