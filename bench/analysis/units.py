"""Numbers in plain units for tables and charts: thousands as k, millions as M, dollars with
the digits that matter, never scientific notation."""

from __future__ import annotations

import math

_SUFFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def _decimal(value: float, significant: int) -> str:
    """``value`` (0 < |value| < 1000) with ``significant`` significant figures as a plain
    decimal: 0.000028 stays 0.000028, not 2.8e-05."""
    value = float(f"{value:.{significant}g}")  # rounded first: 999.96 is 1000, not 999
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    return f"{value:.{max(0, significant - 1 - exponent)}f}"


def plain(value: float | None, missing: str = "-", significant: int = 3) -> str:
    """A count or rate: 0.954, 12.3, 587, 1.38k, 5.22M."""
    if value is None:
        return missing
    value = float(f"{value:.{significant}g}")
    for scale, suffix in _SUFFIXES:
        if abs(value) >= scale:
            return _decimal(value / scale, significant) + suffix
    return _decimal(value, significant)


def usd(value: float | None, missing: str = "-") -> str:
    """Dollars: $1,234 from a thousand up, cents below ($3.74, $12.35), three significant
    figures under a dollar ($0.0619, $0.0000281)."""
    if value is None:
        return missing
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1000:
        return f"{sign}${value:,.0f}"
    if value >= 1:
        return f"{sign}${value:,.2f}"
    return f"{sign}${_decimal(value, 3)}"


def ratio(value: float | None, missing: str = "-") -> str:
    """A ratio of two figures: 1.33x."""
    return missing if value is None else f"{value:.2f}x"


def tick(value: float, dollars: bool) -> str:
    """An axis tick: as :func:`plain` or :func:`usd`, trailing zeros dropped ($0.5, 1.5k)."""
    if value == 0:
        return "$0" if dollars else "0"
    text = usd(value) if dollars else plain(value)
    body = text.rstrip("kMG")
    suffix = text[len(body) :]
    if "." in body:
        body = body.rstrip("0").rstrip(".")
    return body + suffix
