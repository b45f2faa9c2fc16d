"""The test-split loader every framework path keeps for its evaluations: made once per size
and reused, closed when a different size is asked for (framework-free)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class TestSplit(Protocol):
    #: Samples it reads per pass (None: the whole split).
    max_samples: int | None
    facts: dict[str, Any]

    def close(self) -> None: ...


E = TypeVar("E", bound=TestSplit)


class EvalLoaders(Generic[E]):
    """Holds the current test-split loader of a workload."""

    def __init__(self, make: Callable[[int | None], E]) -> None:
        self.make = make
        self.current: E | None = None

    def get(self, max_samples: int | None) -> E:
        """The loader for evaluations of at most ``max_samples`` samples: the one made before
        when it was for as many, else a new one (the old one closed)."""
        if self.current is not None and self.current.max_samples == max_samples:
            return self.current
        self.close()
        self.current = self.make(max_samples)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
