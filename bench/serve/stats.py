"""Triton's own statistics of a served model, read before and after LoadGen's window: what
the server did with the requests (executions, so the average batch) and where a request's
time went on the server (queue against compute input, infer and output).

Triton's statistics endpoint (KServe v2 extension) returns cumulative counters per model
version: ``inference_count`` (samples), ``execution_count`` (model executions, one per
batch), and per phase a request count and total nanoseconds. Over gRPC the JSON form holds
64-bit numbers as strings and leaves zeros out; both forms read the same here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: Phases of a request on the server, as Triton names them.
PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
#: The compute phases (the rest of a successful request's time is queueing and overhead).
COMPUTE = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Counters:
    """One model's cumulative counters at one moment."""

    inferences: int
    executions: int
    #: Per phase: (requests counted, total nanoseconds).
    phases: dict[str, tuple[int, int]]


def counters(statistics: Mapping[str, Any], model: str) -> Counters:
    """The counters of ``model`` (summed over its versions) from a statistics response."""
    inferences = executions = 0
    phases = {p: (0, 0) for p in PHASES}
    found = False
    for entry in statistics.get("model_stats", []):
        if entry.get("name") != model:
            continue
        found = True
        inferences += int(entry.get("inference_count", 0))
        executions += int(entry.get("execution_count", 0))
        stats = entry.get("inference_stats", {})
        for phase in PHASES:
            count, ns = phases[phase]
            value = stats.get(phase, {})
            phases[phase] = (count + int(value.get("count", 0)), ns + int(value.get("ns", 0)))
    if not found:
        raise ValueError(f"the statistics hold no model named {model!r}")
    return Counters(inferences=inferences, executions=executions, phases=phases)


@dataclass(frozen=True)
class ServerFigures:
    """What the server did during the window (after minus before)."""

    #: Successful and failed requests the server counted.
    requests: int
    failed_requests: int
    #: Samples inferred and model executions (batches).
    inferences: int
    executions: int
    #: inferences / executions (None: no execution in the window).
    average_batch: float | None
    #: Mean per successful request, milliseconds: the whole request on the server, its
    #: wait in the queue, and the compute phases.
    request_ms: float | None
    queue_ms: float | None
    compute_input_ms: float | None
    compute_infer_ms: float | None
    compute_output_ms: float | None
    #: Shares of (queue + compute) time: where a request waited against where it ran.
    queue_share: float | None
    compute_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window(before: Counters, after: Counters) -> ServerFigures:
    """The figures of the interval between two readings of the same model."""

    def delta(phase: str) -> tuple[int, int]:
        (c0, n0), (c1, n1) = before.phases[phase], after.phases[phase]
        return c1 - c0, n1 - n0

    def mean_ms(phase: str) -> float | None:
        count, ns = delta(phase)
        return ns / count / 1e6 if count > 0 else None

    inferences = after.inferences - before.inferences
    executions = after.executions - before.executions
    queue_ns = delta("queue")[1]
    compute_ns = sum(delta(p)[1] for p in COMPUTE)
    spent = queue_ns + compute_ns
    return ServerFigures(
        requests=delta("success")[0],
        failed_requests=delta("fail")[0],
        inferences=inferences,
        executions=executions,
        average_batch=inferences / executions if executions > 0 else None,
        request_ms=mean_ms("success"),
        queue_ms=mean_ms("queue"),
        compute_input_ms=mean_ms("compute_input"),
        compute_infer_ms=mean_ms("compute_infer"),
        compute_output_ms=mean_ms("compute_output"),
        queue_share=queue_ns / spent if spent > 0 else None,
        compute_share=compute_ns / spent if spent > 0 else None,
    )


def overhead_ms(client_mean_ms: float | None, figures: ServerFigures | None) -> float | None:
    """Serving overhead per query: the client's mean latency less the server's mean request
    time (serialization, the network and both protocol stacks)."""
    if client_mean_ms is None or figures is None or figures.request_ms is None:
        return None
    return client_mean_ms - figures.request_ms
