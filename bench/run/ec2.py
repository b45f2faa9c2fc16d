"""EC2 instance facts (type, region, zone, lifecycle) from the instance metadata service.

IMDSv2 only (token first), with a short timeout. The metadata address is never contacted
unless DMI says this machine is an EC2 instance, so nothing leaves a laptop or another
cloud's VM; tests point ``dmi_root`` at a temporary directory and inject ``fetch``.
"""

from __future__ import annotations

import functools
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

IMDS_BASE = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_S = 60

#: Result field -> metadata path (all GETs, each with the token header).
META_PATHS = {
    "instance_type": "/latest/meta-data/instance-type",
    "region": "/latest/meta-data/placement/region",
    "availability_zone": "/latest/meta-data/placement/availability-zone",
    "lifecycle": "/latest/meta-data/instance-life-cycle",
}

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")

#: ``fetch(method, path, headers)`` -> response text, or None where there is no answer
#: (e.g. 404). It may raise on a network error or timeout.
Fetch = Callable[[str, str, dict[str, str]], str | None]


def _read_small(path: Path) -> str | None:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            return f.read(256).strip()
    except OSError:
        return None


def looks_like_ec2(dmi_root: Path = Path("/sys")) -> bool:
    """Whether DMI/hypervisor files under ``dmi_root`` (normally /sys) say EC2.

    Nitro instances report sys_vendor "Amazon EC2" and an ``i-...`` board asset tag; older
    Xen instances have a hypervisor UUID starting with "ec2".
    """
    dmi = dmi_root / "devices" / "virtual" / "dmi" / "id"
    if _read_small(dmi / "sys_vendor") == "Amazon EC2":
        return True
    if (_read_small(dmi / "board_asset_tag") or "").startswith("i-"):
        return True
    return (_read_small(dmi_root / "hypervisor" / "uuid") or "").lower().startswith("ec2")


def validate_instance_type(instance_type: str) -> str:
    """Check an instance type given by hand (loosely: family.size); return it stripped."""
    value = instance_type.strip()
    if not _INSTANCE_TYPE.match(value):
        raise ValueError(
            f"not an EC2 instance type: {instance_type!r} "
            "(expected lower-case family.size, e.g. 'p3.2xlarge', 'g4dn.xlarge', 'p5.48xlarge')"
        )
    return value


def imds_fetch(
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    timeout_s: float = 0.5,
    opener: urllib.request.OpenerDirector | None = None,
) -> str | None:
    """One IMDS request through urllib, bypassing any HTTP proxy; None on a 404."""
    if opener is None:
        # Proxy variables must not route the link-local metadata address anywhere else.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = b"" if method == "PUT" else None
    request = urllib.request.Request(IMDS_BASE + path, data=data, headers=headers, method=method)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body: bytes = response.read(4096)
            return body.decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _facts(source: str, reason: str | None, **values: str | None) -> dict[str, str | None]:
    facts: dict[str, str | None] = {key: values.get(key) for key in META_PATHS}
    facts["source"] = source
    facts["reason"] = reason
    return facts


def instance_facts(
    *,
    override: str | None = None,
    fetch: Fetch | None = None,
    dmi_root: Path = Path("/sys"),
    timeout_s: float = 0.5,
) -> dict[str, str | None]:
    """This machine's EC2 facts, or source "absent" with the reason.

    ``override`` (an instance type given by hand) is validated and returned as given, with
    nothing queried. Otherwise IMDS is asked only when :func:`looks_like_ec2` says so.
    """
    if override is not None:
        return _facts("override", None, instance_type=validate_instance_type(override))
    if not looks_like_ec2(dmi_root):
        return _facts("absent", "not an EC2 instance (DMI)")
    if fetch is None:
        fetch = functools.partial(imds_fetch, timeout_s=timeout_s)
    try:
        token = fetch("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(TOKEN_TTL_S)})
    except Exception as exc:  # any failure means no facts, never a failed run
        return _facts("absent", f"IMDSv2 token request failed: {_describe(exc)}")
    token = (token or "").strip()
    if not token:
        return _facts("absent", "IMDSv2 token request gave no token")

    values: dict[str, str | None] = {}
    for key, path in META_PATHS.items():
        try:
            text = fetch("GET", path, {TOKEN_HEADER: token})
        except Exception as exc:
            if key == "instance_type":
                return _facts("absent", f"IMDS {path} failed: {_describe(exc)}")
            text = None
        values[key] = (text or "").strip() or None
    if values["instance_type"] is None:
        return _facts("absent", "IMDS gave no instance type")
    missing = [key for key, value in values.items() if value is None]
    reason = f"IMDS gave no {', '.join(missing)}" if missing else None
    return _facts("imds", reason, **values)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
