"""EC2 facts. No test here reaches the network: every EC2-looking DMI root comes with a fake
fetch, and the default fetch is replaced by one that fails the test if it is ever called."""

import urllib.error
import urllib.request
from pathlib import Path

import pytest

import bench.run.ec2 as ec2
from bench.run.ec2 import instance_facts, looks_like_ec2, validate_instance_type

# The real client, kept before the autouse fixture below swaps it out.
REAL_IMDS_FETCH = ec2.imds_fetch

TOKEN = "AQAEAFakeToken=="
CANNED = {
    "/latest/meta-data/instance-type": "p3.2xlarge",
    "/latest/meta-data/placement/region": "us-west-2",
    "/latest/meta-data/placement/availability-zone": "us-west-2b",
    "/latest/meta-data/instance-life-cycle": "spot\n",
}


@pytest.fixture(autouse=True)
def no_default_fetch(monkeypatch):
    """Make the real IMDS client unreachable from every test in this module."""

    def refuse(*args, **kwargs):
        raise AssertionError("the real IMDS fetch was called")

    monkeypatch.setattr(ec2, "imds_fetch", refuse)


def _dmi(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def ec2_root(tmp_path) -> Path:
    return _dmi(tmp_path, {"devices/virtual/dmi/id/sys_vendor": "Amazon EC2\n"})


@pytest.fixture
def other_root(tmp_path) -> Path:
    return _dmi(
        tmp_path,
        {
            "devices/virtual/dmi/id/sys_vendor": "QEMU\n",
            "devices/virtual/dmi/id/board_asset_tag": "\n",
            "hypervisor/uuid": "4c4c4544-0042-3510-8052-b4c04f4e3232\n",
        },
    )


class FakeImds:
    """Canned IMDSv2: a PUT gives the token; GETs need it."""

    def __init__(self, answers=None, token=TOKEN):
        self.answers = dict(CANNED if answers is None else answers)
        self.token = token
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, method, path, headers):
        self.calls.append((method, path, dict(headers)))
        if method == "PUT":
            assert path == "/latest/api/token"
            assert headers == {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
            return self.token
        assert method == "GET"
        if headers.get("X-aws-ec2-metadata-token") != TOKEN:
            raise urllib.error.HTTPError(path, 401, "Unauthorized", None, None)
        return self.answers.get(path)


# --- DMI -------------------------------------------------------------------------------


def test_looks_like_ec2_by_sys_vendor(ec2_root):
    assert looks_like_ec2(ec2_root) is True


def test_looks_like_ec2_by_board_asset_tag(tmp_path):
    root = _dmi(
        tmp_path,
        {
            "devices/virtual/dmi/id/sys_vendor": "Xen\n",
            "devices/virtual/dmi/id/board_asset_tag": "i-0123456789abcdef0\n",
        },
    )
    assert looks_like_ec2(root) is True


@pytest.mark.parametrize("uuid", ["ec2e1916-9099-7caf-fd21-012345abcdef", "EC2E1916-9099"])
def test_looks_like_ec2_by_hypervisor_uuid(tmp_path, uuid):
    assert looks_like_ec2(_dmi(tmp_path, {"hypervisor/uuid": uuid + "\n"})) is True


def test_not_ec2(other_root, tmp_path):
    assert looks_like_ec2(other_root) is False
    assert looks_like_ec2(tmp_path / "missing") is False
    root = _dmi(tmp_path / "similar", {"devices/virtual/dmi/id/sys_vendor": "Amazon EC2 lookalike"})
    assert looks_like_ec2(root) is False


# --- instance_facts ----------------------------------------------------------------------


def test_off_ec2_nothing_is_fetched(other_root):
    fake = FakeImds()
    facts = instance_facts(fetch=fake, dmi_root=other_root)
    assert facts == {
        "instance_type": None,
        "region": None,
        "availability_zone": None,
        "lifecycle": None,
        "source": "absent",
        "reason": "not an EC2 instance (DMI)",
    }
    assert fake.calls == []


def test_off_ec2_default_fetch_is_not_called(other_root):
    # The autouse fixture makes the default fetch fail the test if it were reached.
    assert instance_facts(dmi_root=other_root)["source"] == "absent"


def test_imds_facts(ec2_root):
    fake = FakeImds()
    facts = instance_facts(fetch=fake, dmi_root=ec2_root)
    assert facts == {
        "instance_type": "p3.2xlarge",
        "region": "us-west-2",
        "availability_zone": "us-west-2b",
        "lifecycle": "spot",
        "source": "imds",
        "reason": None,
    }
    assert fake.calls[0][0] == "PUT"
    gets = fake.calls[1:]
    assert [path for _, path, _ in gets] == list(CANNED)
    assert all(
        method == "GET" and headers == {"X-aws-ec2-metadata-token": TOKEN}
        for method, _, headers in gets
    )


def test_default_fetch_is_used_on_ec2(ec2_root, monkeypatch):
    fake = FakeImds()
    seen_timeouts = []

    def default(method, path, headers, *, timeout_s):
        seen_timeouts.append(timeout_s)
        return fake(method, path, headers)

    monkeypatch.setattr(ec2, "imds_fetch", default)
    facts = instance_facts(dmi_root=ec2_root, timeout_s=0.25)
    assert facts["source"] == "imds" and facts["instance_type"] == "p3.2xlarge"
    assert seen_timeouts == [0.25] * 5


def test_missing_optional_fields_are_none_with_a_note(ec2_root):
    answers = {"/latest/meta-data/instance-type": "g6e.xlarge"}
    facts = instance_facts(fetch=FakeImds(answers), dmi_root=ec2_root)
    assert facts["source"] == "imds"
    assert facts["instance_type"] == "g6e.xlarge"
    assert facts["region"] is None and facts["lifecycle"] is None
    assert facts["reason"] == "IMDS gave no region, availability_zone, lifecycle"


def test_failing_fetch_gives_absent_with_reason(ec2_root):
    def timeout(method, path, headers):
        raise TimeoutError("timed out")

    facts = instance_facts(fetch=timeout, dmi_root=ec2_root)
    assert facts["source"] == "absent"
    assert facts["instance_type"] is None
    assert facts["reason"] == "IMDSv2 token request failed: TimeoutError: timed out"


def test_no_token_gives_absent(ec2_root):
    facts = instance_facts(fetch=FakeImds(token=None), dmi_root=ec2_root)
    assert facts["source"] == "absent"
    assert facts["reason"] == "IMDSv2 token request gave no token"


def test_instance_type_get_failure_gives_absent(ec2_root):
    fake = FakeImds(token="wrong-token")  # GETs are refused with 401
    facts = instance_facts(fetch=fake, dmi_root=ec2_root)
    assert facts["source"] == "absent"
    assert facts["reason"].startswith("IMDS /latest/meta-data/instance-type failed: HTTPError")


def test_no_instance_type_gives_absent(ec2_root):
    facts = instance_facts(fetch=FakeImds(answers={}), dmi_root=ec2_root)
    assert facts["source"] == "absent"
    assert facts["reason"] == "IMDS gave no instance type"


def test_override_bypasses_dmi_and_fetch(ec2_root):
    def must_not_fetch(method, path, headers):
        raise AssertionError("fetch called despite an override")

    facts = instance_facts(override="p5.48xlarge", fetch=must_not_fetch, dmi_root=ec2_root)
    assert facts == {
        "instance_type": "p5.48xlarge",
        "region": None,
        "availability_zone": None,
        "lifecycle": None,
        "source": "override",
        "reason": None,
    }


@pytest.mark.parametrize(
    "good",
    ["p3.2xlarge", "g4dn.xlarge", "p5.48xlarge", "g6e.xlarge", "g5.12xlarge", "u-6tb1.metal"],
)
def test_valid_overrides(good):
    assert validate_instance_type(good) == good
    assert instance_facts(override=good)["instance_type"] == good


@pytest.mark.parametrize(
    "bad", ["", "p3", "P3.2XLARGE", "p3.2xlarge; rm -rf", "p3..2xlarge", ".xlarge", "3p.large"]
)
def test_bad_override_raises(bad):
    with pytest.raises(ValueError, match="not an EC2 instance type"):
        instance_facts(override=bad)


# --- the urllib client, against a fake opener (no socket) --------------------------------


class FakeResponse:
    def __init__(self, body: bytes):
        self.body = body

    def read(self, n=-1):
        return self.body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeOpener:
    def __init__(self, result):
        self.result = result
        self.requests: list[tuple[urllib.request.Request, float]] = []

    def open(self, request, timeout):
        self.requests.append((request, timeout))
        if isinstance(self.result, Exception):
            raise self.result
        return FakeResponse(self.result)


def test_urllib_fetch_builds_imdsv2_requests(monkeypatch):
    opener = FakeOpener(b"tok")
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    got = REAL_IMDS_FETCH("PUT", "/latest/api/token", headers, timeout_s=0.5, opener=opener)
    assert got == "tok"
    request, timeout = opener.requests[0]
    assert request.get_method() == "PUT"
    assert request.full_url == "http://169.254.169.254/latest/api/token"
    assert request.get_header("X-aws-ec2-metadata-token-ttl-seconds") == "60"
    assert timeout == 0.5

    opener = FakeOpener(b"p3.2xlarge")
    got = REAL_IMDS_FETCH(
        "GET",
        "/latest/meta-data/instance-type",
        {"X-aws-ec2-metadata-token": "tok"},
        timeout_s=0.5,
        opener=opener,
    )
    assert got == "p3.2xlarge"
    request, _ = opener.requests[0]
    assert request.get_method() == "GET" and request.data is None
    assert request.get_header("X-aws-ec2-metadata-token") == "tok"


def test_urllib_fetch_404_is_none_other_errors_raise():
    fetch = REAL_IMDS_FETCH
    not_found = urllib.error.HTTPError("u", 404, "Not Found", None, None)
    assert fetch("GET", "/latest/meta-data/x", {}, opener=FakeOpener(not_found)) is None
    with pytest.raises(urllib.error.URLError):
        fetch("GET", "/latest/meta-data/x", {}, opener=FakeOpener(urllib.error.URLError("down")))
