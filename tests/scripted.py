"""A stand-in for ``numpy.random.Generator`` that returns scripted values, so that a
randomized transform can be run along a chosen path (and GluonCV's along the same one)."""

from __future__ import annotations

from collections.abc import Iterable


class ScriptedRng:
    """``uniform`` and ``integers`` return the next scripted value, checked against the
    range asked for (``integers`` excludes ``high``, as numpy does)."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = list(values)
        self.calls: list[tuple[str, float, float]] = []

    def _next(self, kind: str, low: float, high: float) -> float:
        if not self.values:
            raise AssertionError(f"script exhausted at {kind}({low}, {high})")
        self.calls.append((kind, low, high))
        return self.values.pop(0)

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        value = self._next("uniform", low, high)
        assert low <= value <= high, f"uniform({low}, {high}) scripted {value}"
        return value

    def integers(self, low: int, high: int) -> int:
        value = self._next("integers", low, high)
        assert low <= value < high and value == int(value), f"integers({low}, {high}): {value}"
        return int(value)
