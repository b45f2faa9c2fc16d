"""MLPerf LoadGen's detail log (``mlperf_log_detail.txt``) read into one typed result.

Each line is ``:::MLLOG {json}`` with LoadGen's ``key`` and ``value``; the result keeps
LoadGen's own keys (``result_validity``, ``result_99.00_percentile_latency_ns``,
``effective_min_query_count``...) and analysis code reads them through the fields of
:class:`LoadgenResult`. Errors and warnings are the lines flagged ``is_error``/``is_warning``.
A line that is not JSON (a partial last line) is counted and skipped. Standard library only:
``bench compare`` imports this where LoadGen is not installed.
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
#: The keys kept in the record: settings, verdict and figures (not the requested settings,
#: the QSL's sample set or LoadGen's source hashes).
KEPT = ("effective_", "result_", "early_stopping_", "generated_", "num_", "loadgen_version")


class LoadgenLogError(ValueError):
    """A detail log that is absent, unreadable, or holds no LoadGen record."""


@dataclass(frozen=True)
class LoadgenResult:
    """LoadGen's verdict and figures for one test, from its own keys. A figure LoadGen did
    not log (another scenario's) is None."""

    values: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    malformed_lines: int = 0

    def _num(self, key: str) -> float | None:
        value = self.values.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None

    def _ms(self, key: str) -> float | None:
        ns = self._num(key)
        return ns / 1e6 if ns is not None else None

    @property
    def scenario(self) -> str | None:
        return self.values.get("effective_scenario")

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
    def samples_per_s(self) -> float | None:
        """Offline: LoadGen's "Samples per second"; SingleStream: its QPS with overhead."""
        return self._num("result_samples_per_second") or self._num(
            "result_qps_with_loadgen_overhead"
        )

    @property
    def query_count(self) -> int | None:
        count = self._num("result_query_count")
        return int(count) if count is not None else None

    @property
    def target_percentile(self) -> float | None:
        """The bound's percentile as a fraction (0.99)."""
        return self._num("effective_target_latency_percentile")

    def latency_ms(self, percentile: float, per_query: bool = False) -> float | None:
        """LoadGen's latency at a percentile given as a percent (99), or None where it logs
        none (its fixed percentiles: 50, 90, 95, 97, 99, 99.9)."""
        kind = "per_query_" if per_query else ""
        return self._ms(f"result_{percentile:.2f}_percentile_{kind}latency_ns")

    def latency_stat_ms(self, stat: str, per_query: bool = False) -> float | None:
        """``min``, ``max`` or ``mean`` latency."""
        return self._ms(f"result_{stat}_{'query_' if per_query else ''}latency_ns")

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
        v = self.values
        if "result_validity" not in v:
            return ("LoadGen logged no verdict",)
        reasons = []
        if v.get("result_perf_constraints_met") is False:
            bound, got = self._ms("effective_target_latency_ns"), self.target_latency_ms
            pct = self.target_percentile
            detail = f": p{pct * 100:g} {got:.4g} ms > {bound:g} ms" if bound and got else ""
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": dict(self.values),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "malformed_lines": self.malformed_lines,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadgenResult:
        return cls(
            values=dict(data.get("values") or {}),
            errors=tuple(data.get("errors") or ()),
            warnings=tuple(data.get("warnings") or ()),
            malformed_lines=int(data.get("malformed_lines") or 0),
        )


def from_scenario_result(result: Mapping[str, Any] | None) -> LoadgenResult | None:
    """The typed result kept in a record's scenario section (None: not a LoadGen run)."""
    kept = (result or {}).get("loadgen")
    return LoadgenResult.from_dict(kept) if isinstance(kept, Mapping) else None


def read_detail(path: str | Path) -> LoadgenResult:
    """LoadGen's result from its detail log (a file, or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / DETAIL_LOG
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
        if meta.get("is_error"):
            errors.append(f"{key}: {value}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {value}")
        elif key.startswith(KEPT):
            values[key] = re.sub(r"\s+", " ", value).strip() if isinstance(value, str) else value
    if not records:
        raise LoadgenLogError(f"{path} holds no ':::MLLOG' record: not a LoadGen detail log")
    return LoadgenResult(values, tuple(errors), tuple(warnings), malformed)
