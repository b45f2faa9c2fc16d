import pytest

from bench.telemetry.devices import default_gpus


def pytest_collection_modifyitems(config, items):
    """Skip `gpu`-marked tests cleanly where no NVIDIA GPU is visible; run the modules that
    hold `slow` tests first, so that parallel workers (`-n`, one module each at a time) do
    not end on one of them while the others stand idle."""
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within
    if default_gpus():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# The MXNet path's tests run in its own environment (`make test` runs both).
collect_ignore = [] if _importable("mxnet") else ["mxnet"]
# The fleet tests (SkyPilot) run only in .venv-fleet, named on the command line there
# (`make test` runs `pytest tests/fleet` in it); the main run never collects them.
collect_ignore.append("fleet")
# The served path's tests (Triton through PyTriton, real server processes) run in
# .venv-serve (`make test` runs `pytest tests/serve` there).
if not _importable("pytriton"):
    collect_ignore.append("serve")
