"""The ``bench`` commands, one module per family; :mod:`bench.cli` puts them together."""
