"""The data and evaluation scaffolding of every framework path, framework-free.

:class:`DataWorkload` is the workload's side of a run on a dataset (``spec.data``): the
training or inference stream a step takes its batches from (:meth:`DataWorkload.next_batch`,
the wait timed), the test split's loader the evaluations share, and the data facts a record
keeps. :class:`BatchStream` and :class:`EvalData` are the two loaders' bookkeeping; the
framework modules (:mod:`models.torch_data`, :mod:`models.gluon_data`) fill them in with what
differs: their DataLoader, datasets and transforms, the batches' arrays and how the loader's
worker processes stop. What both record about a loader (:func:`loader_facts`,
:func:`eval_facts`) and a dataset (:func:`imdb_facts`; a detection dataset's are
:meth:`data.selection.DetectionInput.facts`) is written here once, so that the two paths'
records say the same things in the same words; which files and splits they read is
:mod:`data.selection`'s.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from data.selection import EVAL_LAST_BATCH

#: What a training or inference loader does with an epoch's short last batch: it starts the
#: next epoch (GluonCV's ``last_batch="rollover"``), so that every batch is full and shapes
#: never change.
LAST_BATCH = "rollover"
#: How IMDB's reviews are labelled, as the records say it.
IMDB_LABELS = "1 for ratings >= 5 (pos/), 0 otherwise (neg/)"


@contextlib.contextmanager
def named_errors(name: Callable[[Exception], Exception | None]) -> Iterator[None]:
    """Raise, in place of an error of the block, what ``name`` makes of it (if anything)."""
    try:
        yield
    except Exception as exc:
        named = name(exc)
        if named is None:
            raise
        raise named from exc


# -- the loaders --------------------------------------------------------------------------------
class Batches(Protocol):
    """What a step reads its batches from: a :class:`BatchStream`, or a workload's own (SQuAD's
    windows held in memory, :class:`data.squad.FeatureStream`)."""

    def next(self) -> Any: ...

    def read_facts(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class BatchStream(ABC):
    """A run's batches one after another, without end: a framework's stream says how it takes
    the next one from its loader (:meth:`take`), what it records of how far it read
    (:meth:`progress`) and how its worker processes stop (:meth:`close`)."""

    def __init__(self, facts: dict[str, Any]) -> None:
        #: The dataset's and loader's facts (:func:`loader_facts`).
        self.facts = facts
        #: Batches handed out so far.
        self.batches = 0

    def next(self) -> Any:
        with named_errors(self.name_error):
            batch = self.take()
        self.batches += 1
        return batch

    def read_facts(self) -> dict[str, Any]:
        """The loader's facts and how far the run read."""
        return {**self.facts, **self.progress()}

    def name_error(self, exc: Exception) -> Exception | None:
        """What a loader error becomes (None: itself)."""
        return None

    @abstractmethod
    def take(self) -> Any:
        """The loader's next batch."""

    @abstractmethod
    def progress(self) -> dict[str, Any]:
        """How far the stream has read, in the framework's terms."""

    @abstractmethod
    def close(self) -> None:
        """Stop the loader's worker processes now rather than when it is collected."""


class EvalData(ABC):
    """A test split's loader for evaluations: each iteration is one pass over its samples (at
    most ``max_samples``, the first ones), in order, the last batch short if it must be. The
    loader and its worker processes are made once and serve every evaluation."""

    def __init__(self, loader: Iterable[Any], facts: dict[str, Any], max_samples: int | None):
        self.loader = loader
        #: ``split``, ``samples`` (read per pass), ``split_samples`` and the pipeline's facts.
        self.facts = facts
        self.max_samples = max_samples

    @property
    def split(self) -> str:
        return str(self.facts["split"])

    def __iter__(self) -> Iterator[Any]:
        with named_errors(self.name_error):
            for batch in self.loader:
                yield self.convert(batch)

    def convert(self, batch: Any) -> Any:
        """A batch as the loader gives it, as an evaluation reads it."""
        return batch

    def name_error(self, exc: Exception) -> Exception | None:
        """What a loader error becomes (None: itself)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Stop the loader's worker processes."""


def eval_samples(size: int, max_samples: int | None) -> int:
    """How many of a split's ``size`` samples an evaluation reads: the first ``max_samples``
    (all without a limit)."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"an evaluation reads at least one sample, not {max_samples}")
    return size if max_samples is None else min(size, max_samples)


def loader_facts(
    loader: str,
    batch_size: int,
    shuffle: bool,
    workers: int,
    pin_memory: bool,
    last_batch: str = LAST_BATCH,
) -> dict[str, Any]:
    """What a record says of a loader: which, its batches, and its worker processes."""
    return {
        "loader": loader,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "last_batch": last_batch,
        "num_workers": workers,
        "pin_memory": pin_memory,
    }


def eval_facts(
    facts: Mapping[str, Any],
    samples: int,
    split_samples: int,
    loader: str,
    batch_size: int,
    workers: int,
    pin_memory: bool,
) -> dict[str, Any]:
    """A test split's ``facts`` with the ``samples`` a pass reads of its ``split_samples``
    and its loader's (no shuffle, the last batch kept: :data:`EVAL_LAST_BATCH`)."""
    return {
        **facts,
        "samples": samples,
        "split_samples": split_samples,
        **loader_facts(loader, batch_size, False, workers, pin_memory, EVAL_LAST_BATCH),
    }


# -- the datasets' facts -----------------------------------------------------------------------
def imdb_facts(
    split: str, vocab_size: int, pipeline: Mapping[str, str], samples: int | None = None
) -> dict[str, Any]:
    """The facts of a run's aclImdb reviews and their tokenization (``pipeline``); a stream's
    (given its ``samples``) also say how the reviews are labelled. (An evaluation's count is
    the loader's, :func:`eval_facts`.)"""
    if samples is None:
        return {"format": "aclimdb", "split": split, "vocab_size": vocab_size, **pipeline}
    return {
        "format": "aclimdb",
        "samples": samples,
        "split": split,
        "labels": IMDB_LABELS,
        "vocab_size": vocab_size,
        **pipeline,
    }


# -- the workload's side ------------------------------------------------------------------------
class DataWorkload(Workload):
    """What a framework path's workload shares for runs on a dataset: the stream a step reads
    (made in ``setup()``), the test split's loader, made by the first evaluation and kept for
    the next of as many samples, and the facts a record keeps of both."""

    #: What one timed step contains in a run on a dataset, in place of ``step_description``
    #: (None: the same step as without one).
    data_step_description: str | None = None

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        if spec.data is not None and self.data_step_description is not None:
            self.step_description = self.data_step_description
        #: With ``spec.data``: the loader's batches, made in ``setup()``; none in a run that
        #: only evaluates on a path whose set-up reads no batch.
        self.batches: Batches | None = None
        #: The test split's loader of the last evaluation.
        self.eval_loader: EvalData | None = None

    def next_batch(self) -> Any:
        """The loader's next batch, on the host; the seconds the step waited for it are
        appended to ``data_wait_s``."""
        if self.batches is None:
            raise RuntimeError(
                "no batches to step through: the run reads no dataset (spec.data), setup() "
                "has not run, or it only evaluates"
            )
        start = time.perf_counter()
        batch = self.batches.next()
        self.data_wait_s.append(time.perf_counter() - start)
        return batch

    def eval_data(self, max_samples: int | None) -> EvalData:
        """The test split's loader for an evaluation of at most ``max_samples`` samples:
        the one made before when it was for as many, else a new one (the old one closed)."""
        if self.spec.data is None:
            raise RuntimeError("an evaluation reads the test split of a dataset: give spec.data")
        current = self.eval_loader
        if current is None or current.max_samples != max_samples:
            self.close_eval_loader()
            current = self.eval_loader = self.make_eval_data(max_samples)
        return current

    def make_eval_data(self, max_samples: int | None) -> EvalData:
        """A new loader over the test split of ``spec.data`` (see :meth:`eval_data`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate accuracy")

    def batch_copy(self) -> str:
        """How a step's batch reaches the device, as the data facts say it."""
        raise NotImplementedError

    def data_facts(self) -> dict[str, Any]:
        evaluation = dict(self.eval_loader.facts) if self.eval_loader is not None else None
        if self.batches is None or (evaluation is not None and self.spec.scenario == "evaluate"):
            # an evaluate run: what it measured is its pass over the test split
            return evaluation or {}
        facts = {**self.batches.read_facts(), "copy": self.batch_copy()}
        if evaluation is not None:
            facts["evaluation"] = evaluation
        return facts

    def close_eval_loader(self) -> None:
        if self.eval_loader is not None:
            self.eval_loader.close()
            self.eval_loader = None

    def teardown(self) -> None:
        if self.batches is not None:
            self.batches.close()
        self.close_eval_loader()
