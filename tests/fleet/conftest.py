"""The fleet tests: SkyPilot installed (.venv-fleet, `make test` runs them there), reading the
fixture catalogue, its state and ours in a fresh directory, no cloud account, no network.

SkyPilot fixes its catalogue directory when it is imported, so everything below is set
before the first ``import sky``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

FIXTURE_CATALOGUE = Path(__file__).parent / "skypilot_catalog"

_ROOT = Path(tempfile.mkdtemp(prefix="bench-fleet-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)
(_ROOT / "home").mkdir()
(_ROOT / "tmp").mkdir()
os.environ["SKY_RUNTIME_DIR"] = str(_ROOT)
os.environ["HOME"] = str(_ROOT / "home")
os.environ["TMPDIR"] = str(_ROOT / "tmp")
tempfile.tempdir = str(_ROOT / "tmp")  # SkyPilot stages its wheel under the temp directory
os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"  # SkyPilot reports usage to a server
# No AWS credentials anywhere (HOME has no ~/.aws), and botocore never asks the instance
# metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _key in (
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
):
    os.environ.pop(_key, None)

from sky.skylet import constants  # noqa: E402  (after the environment above)

CATALOGUE_DIR = _ROOT / ".sky" / "catalogs" / constants.CATALOG_SCHEMA_VERSION
shutil.copytree(FIXTURE_CATALOGUE, CATALOGUE_DIR, ignore=shutil.ignore_patterns("*.md"))
GENERATED_DIR = _ROOT / ".sky" / "generated"
WHEEL = "0" * 32
WHEEL_DIR = _ROOT / "tmp" / WHEEL
WHEEL_DIR.mkdir()


@pytest.fixture
def aws_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """SkyPilot with AWS enabled and its cloud calls replaced, as SkyPilot's own tests do
    (``tests/common.py``: ``enable_all_clouds_in_monkeypatch``), for AWS alone: the enabled
    clouds, the credential and quota checks, the account's zone mapping, the image lookups."""
    from sky import clouds, exceptions

    def no_identity(*args: object, **kwargs: object) -> None:
        raise exceptions.CloudUserIdentityError("no AWS identity in the tests")

    monkeypatch.setattr(
        "sky.check.get_cached_enabled_clouds_or_refresh", lambda *a, **k: [clouds.AWS()]
    )
    monkeypatch.setattr("sky.check.check", lambda *a, **k: None)
    monkeypatch.setattr("sky.backends.backend_utils.check_owner_identity", lambda *a, **k: None)
    monkeypatch.setattr("sky.clouds.aws.AWS.check_quota_available", lambda *a, **k: True)
    monkeypatch.setattr("sky.clouds.aws.AWS.get_active_user_identity", no_identity)
    monkeypatch.setattr("sky.catalog.aws_catalog._get_az_mappings", lambda *a: None)
    # the SkyPilot wheel it would ship to the cluster (built with pip, which asks PyPI for
    # build dependencies): a stand-in, so the dry run needs no network
    monkeypatch.setattr("sky.backends.wheel_utils.build_sky_wheel", lambda: (WHEEL_DIR, WHEEL))
    # describe_images (an AMI's size and root device): what SkyPilot falls back to without
    # credentials, at once instead of after its retries
    monkeypatch.setattr(
        "sky.clouds.aws.AWS._describe_image_with_retry", classmethod(lambda cls, *a, **k: None)
    )
