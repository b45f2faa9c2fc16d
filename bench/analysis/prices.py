"""EC2 GPU instance prices: the shipped catalogue, user overrides, and what a run cost.

The catalogue is a plain CSV (``results/prices/ec2_gpu_on_demand.csv``), one row per instance
type, each with the date and source of its price. Prices change; users correct or extend the
catalogue with their own CSV files (:func:`merge`), give a spot price for one instance
(:func:`with_price`) or a price for a local GPU (:func:`local_price`).

Stdlib only: the harness core must not import an ML framework.
"""

from __future__ import annotations

import csv
import datetime
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

#: The shipped catalogue: <project root>/results/prices/ec2_gpu_on_demand.csv.
DEFAULT_CATALOGUE = (
    Path(__file__).resolve().parents[2] / "results" / "prices" / "ec2_gpu_on_demand.csv"
)

COLUMNS = (
    "instance_type",
    "gpu_model",
    "gpu_count",
    "gpu_memory_gib_per_gpu",
    "vcpus",
    "memory_gib",
    "price_per_hour_usd",
    "region",
    "price_date",
    "source",
)
HARDWARE_COLUMNS = ("gpu_model", "gpu_count", "gpu_memory_gib_per_gpu", "vcpus", "memory_gib")
#: What every override file must have; hardware columns may be left out of it.
PRICE_COLUMNS = ("instance_type", "price_per_hour_usd", "region", "price_date", "source")

LOCAL_INSTANCE_TYPE = "local"
LOCAL_SOURCE = "given on the command line"

_INSTANCE_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


class PriceError(ValueError):
    """Bad price data; the message starts with ``file:line:`` where there is a file."""

    def __init__(self, message: str, path: Path | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path.name}:{line}: " if line is not None else f"{path.name}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class InstancePrice:
    instance_type: str
    gpu_model: str
    gpu_count: int
    gpu_memory_gib_per_gpu: float | None
    vcpus: int | None
    memory_gib: float | None
    price_per_hour_usd: float | None  # None: no trusted price (see source)
    region: str
    price_date: str  # YYYY-MM-DD, or YYYY-MM where only the month is known
    source: str


# -- cell parsing (each raises ValueError with a short reason) ---------------------------------


def positive_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {text!r}")
    return value


def _check_date(text: str) -> str:
    """A YYYY-MM-DD or YYYY-MM date that exists; returned unchanged."""
    if not _DATE.match(text):
        raise ValueError(f"price_date must be YYYY-MM-DD or YYYY-MM, got {text!r}")
    try:
        datetime.date.fromisoformat(text if len(text) == 10 else text + "-01")
    except ValueError:
        raise ValueError(f"price_date is not a real date: {text!r}") from None
    return text


def _check_price(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceError(f"price_per_hour_usd must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise PriceError(f"price_per_hour_usd must be a positive number, got {value!r}")
    return float(value)


# -- reading files --------------------------------------------------------------------------


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: stripped cell}) for each non-blank data row of a CSV file.

    The header must name only known columns, each once, and include ``required``; a cell the
    header does not have is absent from the row dict (not empty).
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise PriceError(f"cannot read: {exc.strerror or exc}", path) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [cell.strip() for cell in next(reader)]
        except StopIteration:
            raise PriceError("empty file (expected a header row)", path, 1) from None
        except csv.Error as exc:
            raise PriceError(f"not a valid CSV: {exc}", path, reader.line_num) from None
        unknown = [name for name in header if name not in COLUMNS]
        if unknown:
            raise PriceError(
                f"unknown column(s) {', '.join(map(repr, unknown))}; known: {', '.join(COLUMNS)}",
                path,
                1,
            )
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise PriceError(f"column(s) given twice: {', '.join(repeated)}", path, 1)
        missing = [name for name in required if name not in header]
        if missing:
            raise PriceError(f"missing column(s): {', '.join(missing)}", path, 1)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise PriceError(f"not a valid CSV: {exc}", path, reader.line_num) from None
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise PriceError(
                    f"expected {len(header)} fields, found {len(cells)}", path, reader.line_num
                )
            yield (
                reader.line_num,
                {name: cell.strip() for name, cell in zip(header, cells, strict=True)},
            )


def _parse_hardware(row: Mapping[str, str]) -> dict[str, Any]:
    """Typed values for the hardware cells present and non-empty in ``row``."""
    out: dict[str, Any] = {}
    if row.get("gpu_model"):
        out["gpu_model"] = row["gpu_model"]
    if row.get("gpu_count"):
        out["gpu_count"] = _positive_int("gpu_count", row["gpu_count"])
    if row.get("gpu_memory_gib_per_gpu"):
        out["gpu_memory_gib_per_gpu"] = positive_float(
            "gpu_memory_gib_per_gpu", row["gpu_memory_gib_per_gpu"]
        )
    if row.get("vcpus"):
        out["vcpus"] = _positive_int("vcpus", row["vcpus"])
    if row.get("memory_gib"):
        out["memory_gib"] = positive_float("memory_gib", row["memory_gib"])
    return out


def _parse_price_fields(row: Mapping[str, str], *, price_required: bool) -> dict[str, Any]:
    instance_type = row["instance_type"]
    if not _INSTANCE_TYPE.match(instance_type):
        raise ValueError(f"not an instance type: {instance_type!r}")
    price_text = row["price_per_hour_usd"]
    if not price_text and price_required:
        raise ValueError("price_per_hour_usd is empty (an override must give a price)")
    price = positive_float("price_per_hour_usd", price_text) if price_text else None
    for name in ("region", "price_date", "source"):
        if not row[name]:
            raise ValueError(f"{name} is empty")
    return {
        "instance_type": instance_type,
        "price_per_hour_usd": price,
        "region": row["region"],
        "price_date": _check_date(row["price_date"]),
        "source": row["source"],
    }


def load_catalogue(path: Path = DEFAULT_CATALOGUE) -> dict[str, InstancePrice]:
    """Instance type -> entry, from a catalogue CSV with all :data:`COLUMNS`.

    ``gpu_model`` and ``gpu_count`` are required in every row; the other hardware cells and
    the price may be empty (unknown). An empty price means no trusted price was found, and the
    source says so. Raises :class:`PriceError` (file and line) on any bad row or duplicate.
    """
    path = Path(path)
    catalogue: dict[str, InstancePrice] = {}
    seen_at: dict[str, int] = {}
    for line, row in _rows(path, COLUMNS):
        try:
            fields = _parse_price_fields(row, price_required=False)
            hardware = _parse_hardware(row)
            for name in ("gpu_model", "gpu_count"):
                if name not in hardware:
                    raise ValueError(f"{name} is empty")
        except ValueError as exc:
            raise PriceError(str(exc), path, line) from None
        name = fields["instance_type"]
        if name in seen_at:
            raise PriceError(f"{name} is listed twice (first at line {seen_at[name]})", path, line)
        seen_at[name] = line
        catalogue[name] = InstancePrice(
            instance_type=name,
            gpu_model=hardware["gpu_model"],
            gpu_count=hardware["gpu_count"],
            gpu_memory_gib_per_gpu=hardware.get("gpu_memory_gib_per_gpu"),
            vcpus=hardware.get("vcpus"),
            memory_gib=hardware.get("memory_gib"),
            price_per_hour_usd=fields["price_per_hour_usd"],
            region=fields["region"],
            price_date=fields["price_date"],
            source=fields["source"],
        )
    return catalogue


def _apply_file(catalogue: dict[str, InstancePrice], path: Path) -> None:
    """Apply one user file to ``catalogue`` in place (see :func:`merge`)."""
    seen_at: dict[str, int] = {}
    for line, row in _rows(path, PRICE_COLUMNS):
        try:
            fields = _parse_price_fields(row, price_required=True)
            hardware = _parse_hardware(row)
        except ValueError as exc:
            raise PriceError(str(exc), path, line) from None
        name = fields["instance_type"]
        if name in seen_at:
            raise PriceError(f"{name} is listed twice (first at line {seen_at[name]})", path, line)
        seen_at[name] = line
        known = catalogue.get(name)
        if known is not None:
            catalogue[name] = replace(known, **hardware, **fields)
            continue
        missing = [column for column in HARDWARE_COLUMNS if column not in hardware]
        if missing:
            raise PriceError(
                f"{name} is not in the catalogue, so it needs all hardware columns; "
                f"missing or empty: {', '.join(missing)}",
                path,
                line,
            )
        catalogue[name] = InstancePrice(**hardware, **fields)


def merge(
    base: Mapping[str, InstancePrice], *overrides: Path | str | Mapping[str, InstancePrice]
) -> dict[str, InstancePrice]:
    """A new catalogue: ``base`` with each override applied in turn (later ones win).

    An override is a user CSV file with the catalogue's columns, or an already loaded mapping
    (whose entries replace or add whole entries). In a file, a row for an instance type that
    is already known may leave out the hardware columns (or leave them empty): then only its
    price, region, date and source change. A new instance type needs every hardware column.
    Every row needs a price. ``base`` is not modified.
    """
    merged = dict(base)
    for override in overrides:
        if isinstance(override, Mapping):
            merged.update(override)
        else:
            _apply_file(merged, Path(override))
    return merged


def lookup(catalogue: Mapping[str, InstancePrice], instance_type: str) -> InstancePrice | None:
    """The entry for ``instance_type`` (surrounding space and case ignored), or None."""
    name = instance_type.strip()
    return catalogue.get(name) or catalogue.get(name.lower())


def _date_or_today(price_date: str | None) -> str:
    if price_date is None:
        return datetime.date.today().isoformat()
    try:
        return _check_date(price_date)
    except ValueError as exc:
        raise PriceError(str(exc)) from None


def with_price(
    entry: InstancePrice,
    price_per_hour_usd: float,
    source: str,
    price_date: str | None = None,
) -> InstancePrice:
    """``entry`` with another price, e.g. a spot price the user saw (date: today if None)."""
    if not source.strip():
        raise PriceError("source is empty: say where the price came from")
    return replace(
        entry,
        price_per_hour_usd=_check_price(price_per_hour_usd),
        source=source.strip(),
        price_date=_date_or_today(price_date),
    )


def local_price(
    price_per_hour_usd: float,
    gpu_model: str | None = None,
    gpu_count: int = 1,
    price_date: str | None = None,
) -> InstancePrice:
    """An entry for ``--price-per-hour`` on a local (non-catalogue) machine."""
    if isinstance(gpu_count, bool) or not isinstance(gpu_count, int) or gpu_count < 1:
        raise PriceError(f"gpu_count must be a whole number of at least 1, got {gpu_count!r}")
    return InstancePrice(
        instance_type=LOCAL_INSTANCE_TYPE,
        gpu_model=(gpu_model or "").strip() or "unknown",
        gpu_count=gpu_count,
        gpu_memory_gib_per_gpu=None,
        vcpus=None,
        memory_gib=None,
        price_per_hour_usd=_check_price(price_per_hour_usd),
        region=LOCAL_INSTANCE_TYPE,
        price_date=_date_or_today(price_date),
        source=LOCAL_SOURCE,
    )


def price_for_run(entry: InstancePrice, gpus_used: int) -> dict[str, Any]:
    """The price figures for a run that used ``gpus_used`` of the instance's GPUs.

    ``price_per_hour_used_usd`` charges only the GPUs used (whole price * used / count), the
    fair share when the rest of the instance could run other work. A missing price stays None.
    """
    if isinstance(gpus_used, bool) or not isinstance(gpus_used, int):
        raise PriceError(f"gpus_used must be a whole number, got {gpus_used!r}")
    if not 1 <= gpus_used <= entry.gpu_count:
        raise PriceError(
            f"gpus_used must be between 1 and {entry.gpu_count} "
            f"(the GPUs of {entry.instance_type}), got {gpus_used}"
        )
    whole = entry.price_per_hour_usd
    return {
        "instance_type": entry.instance_type,
        "price_per_hour_usd": whole,
        "price_per_gpu_hour_usd": None if whole is None else whole / entry.gpu_count,
        "gpus_used": gpus_used,
        "gpu_count": entry.gpu_count,
        "share_used": gpus_used / entry.gpu_count,
        "price_per_hour_used_usd": (None if whole is None else whole * gpus_used / entry.gpu_count),
        "source": entry.source,
        "price_date": entry.price_date,
        "region": entry.region,
    }
