import pytest

from bench.devices import default_gpus


def pytest_collection_modifyitems(config, items):
    """Skip `gpu`-marked tests cleanly where no NVIDIA GPU is visible."""
    if default_gpus():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
