"""Errors for bad input, shared by every layer; the CLI turns them into exit code 2."""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input in a run specification; the CLI turns it into exit code 2."""
