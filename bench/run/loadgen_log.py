"""MLPerf LoadGen's detail log (``mlperf_log_detail.txt``, a ``:::MLLOG {json}`` event a
line) read into one typed result that keeps LoadGen's own keys (``result_validity``,
``result_99.00_percentile_latency_ns``...); analysis code reads them through its fields. A
line that is not JSON (a partial last line) is counted and skipped. Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DETAIL_LOG = "mlperf_log_detail.txt"
PREFIX = ":::MLLOG "
#: The keys kept: settings, verdict and figures (not the QSL's samples or source hashes).
KEPT = ("effective_", "result_", "early_stopping_", "generated_", "num_", "loadgen_version")


class LoadgenLogError(ValueError):
    """A detail log that is absent, unreadable, or holds no LoadGen record."""


@dataclass(frozen=True)
class LoadgenResult:
    """LoadGen's verdict and figures for one test; None for a figure it did not log."""

    values: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    malformed_lines: int = 0

    def _num(self, key: str) -> float | None:
        value: Any = self.values.get(key)
        return float(value) if type(value) in (int, float) else None  # not a bool

    def _ms(self, key: str) -> float | None:
        return None if (ns := self._num(key)) is None else ns / 1e6

    @property
    def scenario(self) -> str | None:
        return str(self.values.get("effective_scenario") or "") or None

    @property
    def valid(self) -> bool:
        return self.values.get("result_validity") == "VALID"

    @property
    def scheduled_samples_per_s(self) -> float | None:
        return self._num("result_scheduled_samples_per_sec")

    @property
    def completed_samples_per_s(self) -> float | None:
        return self._num("result_completed_samples_per_sec")

    @property
    def samples_per_s(self) -> float | None:  # Offline; SingleStream: QPS with overhead
        sps = self._num("result_samples_per_second")
        return sps or self._num("result_qps_with_loadgen_overhead")

    @property
    def query_count(self) -> int | None:
        return int(n) if (n := self._num("result_query_count")) is not None else None

    @property
    def target_percentile(self) -> float | None:  # a fraction: 0.99
        return self._num("effective_target_latency_percentile")

    def latency_ms(self, at: float | str, per_query: bool = False) -> float | None:
        """At a percentile in percent (LoadGen logs 50, 90, 95, 97, 99, 99.9), or min/max/mean."""
        if isinstance(at, str):
            return self._ms(f"result_{at}_{'query_' if per_query else ''}latency_ns")
        return self._ms(f"result_{at:.2f}_percentile_{'per_query_' if per_query else ''}latency_ns")

    @property
    def target_latency_ms(self) -> float | None:
        """The latency at the target percentile (per query in MultiStream)."""
        pct = self.target_percentile
        if pct is None or self.scenario == "Offline":
            return None
        return self.latency_ms(pct * 100, per_query=self.scenario == "MultiStream")

    @property
    def invalid_reasons(self) -> tuple[str, ...]:
        """Why LoadGen judged the run INVALID, one phrase per unmet constraint."""
        if self.valid:
            return ()
        v, reasons = self.values, []
        if "result_validity" not in v:
            return ("LoadGen logged no verdict",)
        if v.get("result_perf_constraints_met") is False:
            bound, got = self._ms("effective_target_latency_ns"), self.target_latency_ms
            pct = self.target_percentile
            ok = bound and got and pct
            detail = f": p{(pct or 0) * 100:g} {got:.4g} ms > {bound:g} ms" if ok else ""
            reasons.append(f"latency bound not met{detail}")
        if v.get("result_min_duration_met") is False:
            reasons.append(f"min duration not met ({v.get('effective_min_duration_ms')} ms)")
        if v.get("result_min_queries_met") is False:
            got_n, need = self.query_count, v.get("effective_min_query_count")
            reasons.append(f"min queries not met ({got_n} of {need})")
        if v.get("early_stopping_met") is False:
            text = " ".join(str(v.get("early_stopping_result", "")).replace("*", " ").split())
            reasons.append(f"early stopping not met: {text}" if text else "early stopping")
        reasons.extend(f"LoadGen error: {e}" for e in self.errors)
        return tuple(reasons) or (f"LoadGen: {v.get('result_validity')}",)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadgenResult:
        lists = {k: tuple(data.get(k) or ()) for k in ("errors", "warnings")}
        return cls(
            dict(data.get("values") or {}), **lists, malformed_lines=data.get("malformed_lines", 0)
        )


def from_scenario_result(result: Mapping[str, Any] | None) -> LoadgenResult | None:
    """The typed result kept in a record's scenario section (None: not a LoadGen run)."""
    kept = (result or {}).get("loadgen")
    return LoadgenResult.from_dict(kept) if isinstance(kept, Mapping) else None


def read_detail(path: str | Path) -> LoadgenResult:
    """LoadGen's result from its detail log (a file, or the directory holding it)."""
    path = Path(path) / DETAIL_LOG if Path(path).is_dir() else Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise LoadgenLogError(f"cannot read the LoadGen detail log {path}: {exc}") from exc
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    malformed = records = 0
    for line in (x for x in lines if x.strip()):
        try:
            event = json.loads(line.split(PREFIX, 1)[1])
            key, value, meta = event["key"], event["value"], event.get("metadata") or {}
        except (IndexError, ValueError, KeyError, TypeError):
            malformed += 1
            continue
        records += 1
        if meta.get("is_error") or meta.get("is_warning"):
            (errors if meta.get("is_error") else warnings).append(f"{key}: {value}")
        elif key.startswith(KEPT):
            values[key] = re.sub(r"\s+", " ", value).strip() if isinstance(value, str) else value
    if not records:
        raise LoadgenLogError(f"{path} holds no ':::MLLOG' record: not a LoadGen detail log")
    return LoadgenResult(values, tuple(errors), tuple(warnings), malformed)
