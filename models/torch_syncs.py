"""Host synchronizations of a PyTorch step: the places where the host waits for the device
to read a value (``item()``, a tensor's truth value, ``nonzero``, an NMS that sizes its
output on the host, a copy from pageable host memory).

A pipelined step must have none: each one serializes the host with the device and turns
queued steps back into synchronized ones. :func:`count_host_syncs` counts them over one call
of a step:

- on a CUDA device with PyTorch's own detector, ``torch.cuda.set_sync_debug_mode("warn")``,
  which warns on every synchronizing CUDA call (its warnings are counted);
- on the CPU, where nothing waits, with :class:`HostReadSpy`: the tensor methods, functions
  and operators that read tensor values on the host (each synchronizes on a GPU) or copy
  host data in (``new_tensor``).
"""

from __future__ import annotations

import collections
import contextlib
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: Operators whose result the host reads (on a GPU each waits for the device): a scalar's
#: value (``item()``, ``bool()``, ``int()``, ``float()``), outputs sized by the data, and
#: comparisons that return a Python bool.
HOST_READ_OPERATORS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::equal",
        "torchvision::nms",
    }
)
#: ``repeat_interleave`` reads its repeats on the host unless told the output size.
_REPEAT_INTERLEAVE = "aten::repeat_interleave"
#: Tensor methods and torch functions (by name) that read tensor values on the host, or, for
#: ``new_tensor``, copy host data into the tensor's device (from pageable memory: a
#: synchronous copy on a GPU). Seen at the Python API, in inference mode too. ``numpy()`` is
#: not among them: it refuses a device tensor, so it only ever reads host memory.
HOST_READ_FUNCTIONS = frozenset(
    {
        "item",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "__contains__",
        "tolist",
        "cpu",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
        "unique_consecutive",
        "equal",
        "allclose",
        "new_tensor",
        "nms",
    }
)
#: Indexing reads a boolean mask's values on the host (to size the result).
_INDEXING = frozenset({"__getitem__", "__setitem__"})
#: The message of PyTorch's synchronization detector (``set_sync_debug_mode("warn")``).
CUDA_SYNC_WARNING = "called a synchronizing CUDA operation"


@dataclass
class HostSyncs:
    """Host synchronizations of one step: how many, where, and how they were counted."""

    method: str
    sites: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def facts(self) -> dict[str, Any]:
        return {
            "per_step": self.count,
            "sites": dict(sorted(self.sites.items())),
            "method": self.method,
        }


def _operator_name(func: Any) -> str:
    """``aten::nonzero`` for the overload ``aten::nonzero.out``."""
    return str(func.name()).split(".")[0]


class HostReadSpy(TorchFunctionMode):
    """Counts host reads of tensor values on any device, each once, with the caller that
    asked for it: the functions and methods of :data:`HOST_READ_FUNCTIONS` and boolean-mask
    indexing, called from Python (a torch function mode: inference mode included), and the
    operators of :data:`HOST_READ_OPERATORS` called from elsewhere (a dispatch mode: reads
    made inside C++ code, outside inference mode). Use as a context manager; the counts are
    in ``syncs``."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = HostSyncs(method="host-read spy (torch function and dispatch modes)")
        self._inside = 0
        self._operators = _OperatorSpy(self)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        reads = (
            name in HOST_READ_FUNCTIONS
            or (name in _INDEXING and _mask_index(args))
            or (name == "repeat_interleave" and _repeats_read(args, kwargs or {}))
        )
        if reads:
            self.record(name)
            self._inside += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            if reads:
                self._inside -= 1

    def record(self, name: str) -> None:
        if self._inside == 0:  # the operators of a counted call are not counted again
            self.syncs.sites[f"{name} in {caller()}"] += 1

    def __enter__(self) -> HostReadSpy:
        self._operators.__enter__()
        try:
            super().__enter__()
        except BaseException:
            self._operators.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._operators.__exit__(*exc)


class _OperatorSpy(TorchDispatchMode):
    """The dispatcher side of :class:`HostReadSpy`."""

    def __init__(self, spy: HostReadSpy) -> None:
        super().__init__()
        self.spy = spy

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        name = _operator_name(func)
        if name in HOST_READ_OPERATORS or (
            name == _REPEAT_INTERLEAVE and (kwargs or {}).get("output_size") is None
        ):
            self.spy.record(name)
        return func(*args, **(kwargs or {}))


def _repeats_read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a ``repeat_interleave`` call reads tensor repeats without an output size."""
    if kwargs.get("output_size") is not None:
        return False
    repeats = kwargs.get("repeats", args[1] if len(args) > 1 else args[0] if args else None)
    return isinstance(repeats, torch.Tensor) and repeats.numel() > 1


def _mask_index(args: tuple[Any, ...]) -> bool:
    """Whether an indexing call's index holds a boolean tensor."""
    if len(args) < 2:
        return False
    index = args[1]
    parts = index if isinstance(index, tuple | list) else (index,)
    return any(
        isinstance(part, torch.Tensor) and part.dtype in (torch.bool, torch.uint8) for part in parts
    )


#: Frames of PyTorch's own plumbing between a caller and the read it asked for.
_PLUMBING = (
    "torch/_tensor.py",
    "torch/_ops.py",
    "torch/_compile.py",
    "torch/_dynamo/eval_frame.py",
    "torch/overrides.py",
    "torch/utils/_python_dispatch.py",
    __file__,
)


def caller() -> str:
    """``path:function`` of the innermost Python frame that asked for a host read, with the
    path from its package down (``transformers/masking_utils.py``, ``models/ssd/torch.py``)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename.endswith(_PLUMBING) or frame.filename.startswith("<"):
            continue
        return f"{short_path(frame.filename)}:{frame.name}"
    return "unknown"


#: The project's root: callers inside it are named from there (``models/ssd/torch.py``).
_ROOT = Path(__file__).resolve().parent.parent


def short_path(filename: str) -> str:
    """A source file's path from its package down: after ``site-packages/``, from the
    project's root, or else its last three parts."""
    path = Path(filename)
    text = path.as_posix()
    if "/site-packages/" in text:
        return text.rsplit("/site-packages/", 1)[1]
    if path.is_absolute() and path.is_relative_to(_ROOT):
        return path.relative_to(_ROOT).as_posix()
    return "/".join(text.split("/")[-3:])


@contextlib.contextmanager
def cuda_sync_detector() -> Iterator[HostSyncs]:
    """Count the synchronizing CUDA calls made inside the block with PyTorch's detector
    (``torch.cuda.set_sync_debug_mode``); the counts are in the yielded object."""
    syncs = HostSyncs(method="torch.cuda.set_sync_debug_mode")
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield syncs
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for warning in caught:
        if CUDA_SYNC_WARNING in str(warning.message):
            syncs.sites[f"sync at {short_path(warning.filename)}:{warning.lineno}"] += 1


def count_host_syncs(
    step: Callable[[], Any], device: torch.device, sync: Callable[[], None]
) -> HostSyncs:
    """The host synchronizations of one call of ``step`` (the device synchronized before and
    after, outside the count)."""
    sync()
    if device.type == "cuda":
        with cuda_sync_detector() as syncs:
            step()
    else:
        with HostReadSpy() as spy:
            step()
        syncs = spy.syncs
    sync()
    return syncs


def not_counted_reason(scenario: str, device_type: str, compile_mode: str) -> str | None:
    """Why a run's step is not counted, or None where it is: the loop repeats one step (the
    other scenarios issue queries or evaluations), and on the CPU the spy's modes cannot run
    around a compiled module (``torch.compile`` refuses them; its graph, traced with
    ``fullgraph=True``, holds no host read in any case)."""
    if scenario != "loop":
        return f"the {scenario} scenario times no repeated step"
    if device_type != "cuda" and compile_mode != "off":
        return "the CPU's host-read spy cannot run around a compiled step"
    return None
