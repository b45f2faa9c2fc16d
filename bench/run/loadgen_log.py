"""MLPerf LoadGen's output files, read into a typed result.

LoadGen (``mlcommons-loadgen``, module ``mlperf_loadgen``) writes four files into
``LogOutputSettings.outdir``:

* ``mlperf_log_detail.txt``: one event a line, ``:::MLLOG {json}`` (``AsyncLog::LogDetail``
  in loadgen/logging.h): ``{"key", "value", "time_ms", "namespace", "event_type",
  "metadata": {"is_error", "is_warning", "file", "line_no", "pid", "tid"}}``. The settings
  LoadGen used (``effective_*``, test_settings_internal.cc ``LogEffectiveSettings``), its
  verdict and every figure of the summary (``result_*``, ``early_stopping_*``,
  results.cc ``PerformanceSummary::LogDetail``), and errors and warnings
  (``error_*``/``warning_*`` keys, flagged ``is_error``/``is_warning``).
* ``mlperf_log_summary.txt``: the same verdict and figures for people (results.cc
  ``PerformanceSummary::LogSummary``), fewer of them and rounded.
* ``mlperf_log_accuracy.json``: the responses' data in accuracy mode (``[]`` otherwise).
* ``mlperf_log_trace.json``: a Chrome trace when ``LogSettings.enable_trace`` (else empty).

:func:`parse_detail` is the reader; the detail log alone has everything the result needs,
and more exactly (the summary rounds the throughput to two decimals and gives no
individual error messages). :func:`parse_summary` reads the summary into the same type,
for a directory whose detail log is gone or was cut before LoadGen's verdict
(:func:`parse_logs` picks). Standard library only: ``bench compare`` imports this module
where LoadGen is not installed.

Caveats of the format, all handled here: LoadGen does not JSON-escape string values (a quote
in a message breaks the line's JSON) and writes doubles through ``operator<<`` (``inf``,
``nan``; six significant digits); a detail log that was being written when the process died
ends in a partial line; a warning raised after one test ends can land at the top of the next
test's detail log.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"

MLLOG_PREFIX = ":::MLLOG "

#: LoadGen's fixed latency percentiles (results.h ``latency_percentiles``), as logged in a
#: key (``DoubleToString(p * 100)``: two decimals) and as a field of :class:`LatencyStats`.
PERCENTILE_FIELDS: dict[str, str] = {
    "50.00": "p50",
    "90.00": "p90",
    "95.00": "p95",
    "97.00": "p97",
    "99.00": "p99",
    "99.90": "p99_9",
}


class LoadgenLogError(ValueError):
    """A LoadGen log that is absent, unreadable, or not a LoadGen log at all."""


@dataclass(frozen=True)
class DetailRecord:
    """One ``:::MLLOG`` line of the detail log."""

    key: str
    value: Any
    time_ms: float | None = None
    is_error: bool = False
    is_warning: bool = False
    file: str | None = None
    line_no: int | None = None


@dataclass(frozen=True)
class LogMessage:
    """An error or warning LoadGen logged: its key (``error_runtime``,
    ``warning_generic_message``...), the message, and where in LoadGen it was raised."""

    key: str
    message: str
    file: str | None = None
    line_no: int | None = None


@dataclass(frozen=True)
class LatencyStats:
    """Latencies in milliseconds: LoadGen's extremes, mean and fixed percentiles."""

    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p97: float | None = None
    p99: float | None = None
    p99_9: float | None = None

    def at(self, fraction: float | None) -> float | None:
        """The latency at a percentile given as LoadGen does (0.99), where LoadGen logs it."""
        if fraction is None:
            return None
        name = PERCENTILE_FIELDS.get(f"{fraction * 100:.2f}")
        value = getattr(self, name) if name is not None else None
        return value if isinstance(value, float) else None


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings LoadGen ran with (``effective_*`` keys; the summary's "Test Parameters
    Used"), after its own derivations: Offline's samples per query, SingleStream's target
    QPS from the expected latency, and so on. Units as LoadGen's names say; the latency
    percentile is a fraction (0.99)."""

    samples_per_query: int | None = None
    target_qps: float | None = None
    target_latency_ns: int | None = None
    target_latency_percentile: float | None = None
    max_async_queries: int | None = None
    target_duration_ms: int | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    min_query_count: int | None = None
    max_query_count: int | None = None
    min_sample_count: int | None = None
    performance_sample_count: int | None = None
    accuracy_sample_count: int | None = None
    qsl_rng_seed: int | None = None
    sample_index_rng_seed: int | None = None
    schedule_rng_seed: int | None = None


@dataclass(frozen=True)
class LoadgenResult:
    """LoadGen's verdict and figures for one test. A figure LoadGen did not log (another
    scenario's, or one past the end of a truncated log) is None."""

    #: which file it was read from: ``detail`` or ``summary``
    log: str
    #: LoadGen's names: SingleStream, MultiStream, Server, Offline
    scenario: str | None = None
    #: PerformanceOnly, AccuracyOnly, SubmissionRun, FindPeakPerformance
    mode: str | None = None
    #: ``VALID``/``INVALID`` as logged; None where LoadGen logged no verdict
    validity: str | None = None
    valid: bool = False
    #: why the run is not valid, one phrase per unmet constraint (empty when valid)
    invalid_reasons: tuple[str, ...] = ()
    #: LoadGen's own recommendation (``result_invalid_reason``; it omits early stopping)
    loadgen_invalid_reason: str | None = None
    #: the constraints behind the verdict; perf constraints (the latency bound) exist in
    #: Server only
    perf_constraints_met: bool | None = None
    min_duration_met: bool | None = None
    min_queries_met: bool | None = None
    early_stopping_met: bool | None = None
    #: LoadGen's early-stopping report, one line (None in Offline, which has none)
    early_stopping_result: str | None = None
    #: early stopping's estimate of the latency at the target percentile (SingleStream:
    #: ``early_stopping_latency_ss``, per sample; MultiStream: ``early_stopping_latency_ms``,
    #: per query); None where too few queries ran for one
    early_stopping_latency_ms: float | None = None
    #: SingleStream only: early stopping's 99th-percentile estimate (LoadGen's
    #: ``early_stopping_latency_ms`` there, "ms" for MultiStream, which it is used to infer)
    early_stopping_p99_latency_ms: float | None = None
    query_count: int | None = None
    #: Server: queries over the latency bound
    overlatency_query_count: int | None = None
    #: Server: samples per second as completed (the result) and as scheduled
    completed_samples_per_s: float | None = None
    scheduled_samples_per_s: float | None = None
    #: Offline: samples per second
    samples_per_s: float | None = None
    #: SingleStream: queries per second with and without LoadGen's overhead
    qps_with_loadgen_overhead: float | None = None
    qps_without_loadgen_overhead: float | None = None
    #: the latency at the target percentile (per query in MultiStream); not in Offline
    target_percentile_latency_ms: float | None = None
    #: per-sample latency (absent from the summary in MultiStream)
    latency_ms: LatencyStats = field(default_factory=LatencyStats)
    #: MultiStream: per-query latency
    query_latency_ms: LatencyStats | None = None
    settings: EffectiveSettings = field(default_factory=EffectiveSettings)
    sut_name: str | None = None
    loadgen_version: str | None = None
    test_datetime: str | None = None
    #: errors and warnings with their messages (detail log only)
    errors: tuple[LogMessage, ...] = ()
    warnings: tuple[LogMessage, ...] = ()
    #: how many (detail: the messages above; summary: its closing count lines)
    num_errors: int | None = None
    num_warnings: int | None = None
    #: the log reached the end of LoadGen's results (detail: ``num_errors``, its last key;
    #: summary: the test parameters)
    complete: bool = False
    #: lines that could not be read (a partial last line of a truncated log)
    malformed_lines: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A fresh JSON-ready mapping: nested dataclasses as dicts, tuples as lists."""
        out = _plain(self)
        assert isinstance(out, dict)
        return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- the detail log --------------------------------------------------------------------------

# The line LoadGen writes, for lines the json module refuses (an unescaped quote in a string,
# a bare inf or nan): the value is everything between "value" and "time_ms".
_LINE_RE = re.compile(
    r'^\{"key": "(?P<key>[^"]*)", "value": (?P<value>.*), "time_ms": (?P<time>[^,]*), '
    r'"namespace": "[^"]*", "event_type": "[^"]*", "metadata": \{'
    r'"is_error": (?P<err>true|false), "is_warning": (?P<warn>true|false), '
    r'"file": "(?P<file>[^"]*)", "line_no": (?P<line>\d+)(?:, .*)?\}\}$'
)
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, "-nan": math.nan}


def _loose_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.lower() in _NONFINITE:
        return _NONFINITE[text.lower()]
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]  # a string LoadGen did not escape
    return text


def _parse_line(body: str) -> DetailRecord | None:
    """One line's JSON (after the ``:::MLLOG`` prefix); None if it is not a whole record."""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("key"), str) and "value" in obj:
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        time_ms = obj.get("time_ms")
        line_no = meta.get("line_no")
        file = meta.get("file")
        return DetailRecord(
            key=obj["key"],
            value=obj["value"],
            time_ms=_as_float(time_ms),
            is_error=meta.get("is_error") is True,
            is_warning=meta.get("is_warning") is True,
            file=file if isinstance(file, str) else None,
            line_no=_as_int(line_no),
        )
    match = _LINE_RE.match(body)
    if match is None:
        return None
    try:
        time_f: float | None = float(match["time"])
    except ValueError:
        time_f = None
    return DetailRecord(
        key=match["key"],
        value=_loose_value(match["value"]),
        time_ms=time_f,
        is_error=match["err"] == "true",
        is_warning=match["warn"] == "true",
        file=match["file"],
        line_no=int(match["line"]),
    )


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise LoadgenLogError(f"no LoadGen {what} at {path}") from exc
    except OSError as exc:
        raise LoadgenLogError(f"cannot read the LoadGen {what} {path}: {exc}") from exc


def read_detail_records(path: str | Path) -> tuple[list[DetailRecord], int]:
    """Every record of a detail log, in order, and the count of lines that are not one.

    LoadgenLogError where the file is absent or unreadable or holds no record at all."""
    path = Path(path)
    text = _read_text(path, "detail log")
    records: list[DetailRecord] = []
    malformed = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        record = _parse_line(line[len(MLLOG_PREFIX) :]) if line.startswith(":::MLLOG") else None
        if record is None:
            malformed += 1
        else:
            records.append(record)
    if not records:
        raise LoadgenLogError(f"{path} holds no ':::MLLOG' record: not a LoadGen detail log")
    return records, malformed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_int(value: Any) -> int | None:
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    """A finite float; None for anything else (a JSON result has no inf or nan)."""
    if not _is_number(value):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ns_to_ms(value: Any) -> float | None:
    ns = _as_float(value)
    return ns / 1e6 if ns is not None else None


def _estimate_ms(value: Any) -> float | None:
    """An early-stopping estimate: LoadGen logs 0 where it computed none."""
    ms = _ns_to_ms(value)
    return ms if ms else None


def _one_line(text: str | None) -> str | None:
    """LoadGen's multi-line reports as one line: whitespace collapsed, ``*`` bullets dropped."""
    if text is None:
        return None
    text = re.sub(r"\s+", " ", text.replace(" * ", " ")).strip()
    return text.removeprefix("* ") or None


def _latency_stats(values: Mapping[str, Any], kind: str = "") -> LatencyStats:
    """Latencies from ``result_min_latency_ns``, ``result_99.00_percentile_latency_ns``...
    (kind ``""``: per sample) or ``result_min_query_latency_ns``,
    ``result_99.00_percentile_per_query_latency_ns``... (kind ``"query"``: MultiStream's
    per query)."""
    extreme = f"{kind}_latency_ns" if kind else "latency_ns"
    pct_suffix = f"percentile_per_{kind}_latency_ns" if kind else "percentile_latency_ns"
    fields: dict[str, float | None] = {
        "min": _ns_to_ms(values.get(f"result_min_{extreme}")),
        "max": _ns_to_ms(values.get(f"result_max_{extreme}")),
        "mean": _ns_to_ms(values.get(f"result_mean_{extreme}")),
    }
    for pct, name in PERCENTILE_FIELDS.items():
        fields[name] = _ns_to_ms(values.get(f"result_{pct}_{pct_suffix}"))
    return LatencyStats(**fields)


def _invalid_reasons(
    *,
    validity: str | None,
    mode: str | None,
    perf_met: bool | None,
    duration_met: bool | None,
    queries_met: bool | None,
    early_met: bool | None,
    early_text: str | None,
    loadgen_reason: str | None,
    percentile_latency_ms: float | None,
    settings: EffectiveSettings,
    query_count: int | None,
) -> tuple[str, ...]:
    if validity == "VALID":
        return ()
    if validity is None:
        if mode == "AccuracyOnly":
            return ("accuracy mode: LoadGen gives no performance verdict",)
        return ("LoadGen logged no verdict (the test did not finish or its log was cut short)",)
    reasons: list[str] = []
    if perf_met is False:
        reason = "latency constraint not met"
        bound_ns, pct = settings.target_latency_ns, settings.target_latency_percentile
        if percentile_latency_ms is not None and bound_ns and pct is not None:
            reason += (
                f": p{pct * 100:g} latency {percentile_latency_ms:.4g} ms"
                f" > {bound_ns / 1e6:g} ms bound"
            )
        reasons.append(reason)
    if duration_met is False:
        reason = "min duration not met"
        if settings.min_duration_ms is not None:
            reason += f" ({settings.min_duration_ms} ms)"
        reasons.append(reason)
    if queries_met is False:
        reason = "min queries not met"
        if query_count is not None and settings.min_query_count is not None:
            reason += f" ({query_count} of {settings.min_query_count})"
        reasons.append(reason)
    if early_met is False:
        reasons.append("early stopping not met" + (f": {early_text}" if early_text else ""))
    if not reasons:
        reasons.append(f"LoadGen: {validity}" + (f": {loadgen_reason}" if loadgen_reason else ""))
    return tuple(reasons)


def parse_detail(path: str | Path) -> LoadgenResult:
    """LoadGen's result from its detail log (``mlperf_log_detail.txt``).

    Where a key appears more than once the last one counts. LoadgenLogError where the file
    is absent, unreadable, or holds no ``:::MLLOG`` record; a log cut short gives None for
    what it lacks (and an invalid verdict where the verdict itself is missing)."""
    records, malformed = read_detail_records(path)
    values: dict[str, Any] = {}
    errors: list[LogMessage] = []
    warnings: list[LogMessage] = []
    for rec in records:
        values[rec.key] = rec.value
        if rec.is_error or rec.key.startswith("error_"):
            errors.append(LogMessage(rec.key, _message(rec.value), rec.file, rec.line_no))
        elif rec.is_warning or rec.key.startswith("warning_"):
            warnings.append(LogMessage(rec.key, _message(rec.value), rec.file, rec.line_no))

    settings = EffectiveSettings(
        samples_per_query=_as_int(values.get("effective_samples_per_query")),
        target_qps=_as_float(values.get("effective_target_qps")),
        target_latency_ns=_as_int(values.get("effective_target_latency_ns")),
        target_latency_percentile=_as_float(values.get("effective_target_latency_percentile")),
        max_async_queries=_as_int(values.get("effective_max_async_queries")),
        target_duration_ms=_as_int(values.get("effective_target_duration_ms")),
        min_duration_ms=_as_int(values.get("effective_min_duration_ms")),
        max_duration_ms=_as_int(values.get("effective_max_duration_ms")),
        min_query_count=_as_int(values.get("effective_min_query_count")),
        max_query_count=_as_int(values.get("effective_max_query_count")),
        min_sample_count=_as_int(values.get("effective_min_sample_count")),
        performance_sample_count=_as_int(values.get("effective_performance_sample_count")),
        accuracy_sample_count=_as_int(values.get("effective_accuracy_sample_count")),
        qsl_rng_seed=_as_int(values.get("effective_qsl_rng_seed")),
        sample_index_rng_seed=_as_int(values.get("effective_sample_index_rng_seed")),
        schedule_rng_seed=_as_int(values.get("effective_schedule_rng_seed")),
    )
    scenario = _as_str(values.get("effective_scenario")) or _as_str(
        values.get("requested_scenario")
    )
    mode = _as_str(values.get("effective_test_mode")) or _as_str(values.get("requested_test_mode"))
    latency = _latency_stats(values)
    query_latency: LatencyStats | None = None
    if scenario == "MultiStream" or "result_mean_query_latency_ns" in values:
        query_latency = _latency_stats(values, "query")
    pct = settings.target_latency_percentile
    if scenario == "Offline":
        target_latency = None
    elif scenario == "MultiStream":
        target_latency = query_latency.at(pct) if query_latency is not None else None
    else:
        target_latency = latency.at(pct)

    if scenario == "SingleStream":
        early_ms = _estimate_ms(values.get("early_stopping_latency_ss"))
        early_p99 = _estimate_ms(values.get("early_stopping_latency_ms"))
    else:
        early_ms = _estimate_ms(values.get("early_stopping_latency_ms"))
        early_p99 = None

    validity = _as_str(values.get("result_validity"))
    perf_met = _as_bool(values.get("result_perf_constraints_met"))
    duration_met = _as_bool(values.get("result_min_duration_met"))
    queries_met = _as_bool(values.get("result_min_queries_met"))
    early_met = _as_bool(values.get("early_stopping_met"))
    early_text = _one_line(_as_str(values.get("early_stopping_result")))
    loadgen_reason = _one_line(_as_str(values.get("result_invalid_reason")))
    query_count = _as_int(values.get("result_query_count"))
    return LoadgenResult(
        log="detail",
        scenario=scenario,
        mode=mode,
        validity=validity,
        valid=validity == "VALID",
        invalid_reasons=_invalid_reasons(
            validity=validity,
            mode=mode,
            perf_met=perf_met,
            duration_met=duration_met,
            queries_met=queries_met,
            early_met=early_met,
            early_text=early_text,
            loadgen_reason=loadgen_reason,
            percentile_latency_ms=target_latency,
            settings=settings,
            query_count=query_count,
        ),
        loadgen_invalid_reason=loadgen_reason,
        perf_constraints_met=perf_met,
        min_duration_met=duration_met,
        min_queries_met=queries_met,
        early_stopping_met=early_met,
        early_stopping_result=early_text,
        early_stopping_latency_ms=early_ms,
        early_stopping_p99_latency_ms=early_p99,
        query_count=query_count,
        overlatency_query_count=_as_int(values.get("result_overlatency_query_count")),
        completed_samples_per_s=_as_float(values.get("result_completed_samples_per_sec")),
        scheduled_samples_per_s=_as_float(values.get("result_scheduled_samples_per_sec")),
        samples_per_s=_as_float(values.get("result_samples_per_second")),
        qps_with_loadgen_overhead=_as_float(values.get("result_qps_with_loadgen_overhead")),
        qps_without_loadgen_overhead=_as_float(values.get("result_qps_without_loadgen_overhead")),
        target_percentile_latency_ms=target_latency,
        latency_ms=latency,
        query_latency_ms=query_latency,
        settings=settings,
        sut_name=_as_str(values.get("sut_name")),
        loadgen_version=_as_str(values.get("loadgen_version")),
        test_datetime=_as_str(values.get("test_datetime")),
        errors=tuple(errors),
        warnings=tuple(warnings),
        num_errors=len(errors),
        num_warnings=len(warnings),
        complete="num_errors" in values and validity is not None,
        malformed_lines=malformed,
    )


def _message(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# -- the summary -----------------------------------------------------------------------------

_SUMMARY_PERCENTILE_RE = re.compile(r"^(\d+\.\d+) percentile latency \(ns\)$")
_SUMMARY_TARGET_RE = re.compile(r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)$")
_SUMMARY_ESTIMATE_RE = re.compile(r"Early stopping (\d+(?:\.\d+)?)th percentile estimate: (\d+)")
_SUMMARY_COUNT_RE = re.compile(r"^(No|\d+) (warning|ERROR)s? encountered", re.IGNORECASE)
_YES_NO = {"yes": True, "no": False}

#: summary parameter name -> EffectiveSettings field
_SUMMARY_SETTINGS = {
    "samples_per_query": "samples_per_query",
    "target_qps": "target_qps",
    "target_latency (ns)": "target_latency_ns",
    "max_async_queries": "max_async_queries",
    "min_duration (ms)": "min_duration_ms",
    "max_duration (ms)": "max_duration_ms",
    "min_query_count": "min_query_count",
    "max_query_count": "max_query_count",
    "performance_sample_count": "performance_sample_count",
    "accuracy_sample_count": "accuracy_sample_count",
    "qsl_rng_seed": "qsl_rng_seed",
    "sample_index_rng_seed": "sample_index_rng_seed",
    "schedule_rng_seed": "schedule_rng_seed",
}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _summary_int(text: str) -> int | None:
    value = _number(text)
    return int(value) if value is not None and value.is_integer() else None


def parse_summary(path: str | Path) -> LoadgenResult:
    """LoadGen's result from its human summary (``mlperf_log_summary.txt``): the fallback
    where the detail log is unusable. It lacks the errors' messages, the target latency
    percentile in Server and Offline, the overlatency count, and per-sample latencies in
    MultiStream; its throughputs are rounded. LoadgenLogError where the file is absent,
    unreadable, or not a LoadGen summary."""
    path = Path(path)
    text = _read_text(path, "summary")
    if "MLPerf Results Summary" not in text:
        raise LoadgenLogError(f"{path} is not a LoadGen summary (no 'MLPerf Results Summary')")
    values: dict[str, str] = {}
    recommendations: list[str] = []
    early_lines: list[str] = []
    section: str | None = None
    num_errors: int | None = None
    num_warnings: int | None = None
    target_pct: float | None = None
    target_ns: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        count = _SUMMARY_COUNT_RE.match(line)
        if count is not None:
            n = 0 if count[1].lower() == "no" else int(count[1])
            if count[2].lower() == "warning":
                num_warnings = n
            else:
                num_errors = n
            continue
        if not line or line.startswith("===="):
            section = None
            continue
        if line == "Recommendations:":
            section = "recommendations"
            continue
        if line.endswith("Early Stopping Result:"):
            section = "early"
            continue
        if section == "recommendations":
            recommendations.append(line)
            continue
        if section == "early":
            early_lines.append(line)
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        target = _SUMMARY_TARGET_RE.match(name)
        if target is not None:
            target_pct, target_ns = float(target[1]) / 100, _number(value)
            continue
        values.setdefault(name, value)

    scenario = values.get("Scenario")
    percentiles: dict[str, float | None] = {}
    for name, value in values.items():
        match = _SUMMARY_PERCENTILE_RE.match(name)
        if match is not None and match[1] in PERCENTILE_FIELDS:
            ns = _number(value)
            percentiles[PERCENTILE_FIELDS[match[1]]] = ns / 1e6 if ns is not None else None

    def ns_ms(name: str) -> float | None:
        ns = _number(values.get(name, ""))
        return ns / 1e6 if ns is not None else None

    stats = LatencyStats(
        min=ns_ms("Min latency (ns)"),
        max=ns_ms("Max latency (ns)"),
        mean=ns_ms("Mean latency (ns)"),
        **percentiles,
    )
    # MultiStream's summary gives per-query latencies only
    latency, query_latency = (LatencyStats(), stats) if scenario == "MultiStream" else (stats, None)

    setting_values: dict[str, Any] = {}
    for name, attr in _SUMMARY_SETTINGS.items():
        if name in values:
            setting_values[attr] = (
                _number(values[name]) if attr == "target_qps" else _summary_int(values[name])
            )
    settings = EffectiveSettings(target_latency_percentile=target_pct, **setting_values)

    estimates = {
        float(m[1]) / 100: int(m[2]) / 1e6
        for m in _SUMMARY_ESTIMATE_RE.finditer(" ".join(early_lines))
    }
    early_ms = estimates.get(target_pct) if target_pct is not None else None
    early_p99 = estimates.get(0.99) if scenario == "SingleStream" else None

    def flag(name: str) -> bool | None:
        return _YES_NO.get(values.get(name, "").lower())

    validity = values.get("Result is") or None
    perf_met = flag("Performance constraints satisfied")
    duration_met = flag("Min duration satisfied")
    queries_met = flag("Min queries satisfied")
    early_met = flag("Early stopping satisfied")
    early_text = _one_line(" ".join(early_lines))
    loadgen_reason = _one_line(" ".join(recommendations))
    target_latency = None if scenario == "Offline" or target_ns is None else target_ns / 1e6
    mode = values.get("Mode")
    return LoadgenResult(
        log="summary",
        scenario=scenario,
        mode=mode,
        validity=validity,
        valid=validity == "VALID",
        invalid_reasons=_invalid_reasons(
            validity=validity,
            mode=mode,
            perf_met=perf_met,
            duration_met=duration_met,
            queries_met=queries_met,
            early_met=early_met,
            early_text=early_text,
            loadgen_reason=loadgen_reason,
            percentile_latency_ms=target_latency,
            settings=settings,
            query_count=None,
        ),
        loadgen_invalid_reason=loadgen_reason,
        perf_constraints_met=perf_met,
        min_duration_met=duration_met,
        min_queries_met=queries_met,
        early_stopping_met=early_met,
        early_stopping_result=early_text,
        early_stopping_latency_ms=early_ms,
        early_stopping_p99_latency_ms=early_p99,
        completed_samples_per_s=_number(values.get("Completed samples per second", "")),
        scheduled_samples_per_s=_number(values.get("Scheduled samples per second", "")),
        samples_per_s=_number(values.get("Samples per second", "")),
        qps_with_loadgen_overhead=_number(values.get("QPS w/ loadgen overhead", "")),
        qps_without_loadgen_overhead=_number(values.get("QPS w/o loadgen overhead", "")),
        target_percentile_latency_ms=target_latency,
        latency_ms=latency,
        query_latency_ms=query_latency,
        settings=settings,
        sut_name=values.get("SUT name"),
        num_errors=num_errors,
        num_warnings=num_warnings,
        complete=num_errors is not None,
    )


def parse_logs(outdir: str | Path) -> LoadgenResult:
    """LoadGen's result from its output directory: the detail log, or the summary where the
    detail log is absent or unreadable or holds no verdict (and the summary does)."""
    outdir = Path(outdir)
    detail: LoadgenResult | None = None
    detail_error: LoadgenLogError | None = None
    try:
        detail = parse_detail(outdir / DETAIL_LOG)
    except LoadgenLogError as exc:
        detail_error = exc
    if detail is not None and detail.validity is not None:
        return detail
    try:
        summary = parse_summary(outdir / SUMMARY_LOG)
    except LoadgenLogError as exc:
        if detail is not None:
            return detail
        raise LoadgenLogError(
            f"no readable LoadGen log in {outdir}: {detail_error}; {exc}"
        ) from exc
    return summary if summary.validity is not None or detail is None else detail
