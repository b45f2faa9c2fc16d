"""The EC2 price catalogue, user overrides and per-run price figures (no network, no GPU)."""

import ast
import datetime
import re
from pathlib import Path

import pytest

import bench.analysis.prices as prices
from bench.analysis.prices import (
    COLUMNS,
    DEFAULT_CATALOGUE,
    InstancePrice,
    PriceError,
    load_catalogue,
    local_price,
    lookup,
    merge,
    price_for_run,
    with_price,
)

REQUIRED_TYPES = [
    "p3.2xlarge",
    "p3.8xlarge",
    "p3.16xlarge",
    "p3dn.24xlarge",
    "g4dn.xlarge",
    "g4dn.12xlarge",
    "g5.xlarge",
    "g5.12xlarge",
    "g6.xlarge",
    "g6e.xlarge",
    "p4d.24xlarge",
    "p4de.24xlarge",
    "p5.4xlarge",
    "p5.48xlarge",
    "p5en.48xlarge",
]

HEADER = ",".join(COLUMNS)
GOOD_ROW = "x1.big,T4,4,16,48,192,3.912,us-east-1,2026-09-24,some page https://example.org/x"


def _write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _entry(**changes) -> InstancePrice:
    fields = dict(
        instance_type="p3.16xlarge",
        gpu_model="V100",
        gpu_count=8,
        gpu_memory_gib_per_gpu=16.0,
        vcpus=64,
        memory_gib=488.0,
        price_per_hour_usd=24.48,
        region="us-east-1",
        price_date="2026-09-24",
        source="test",
    )
    fields.update(changes)
    return InstancePrice(**fields)


# -- the shipped catalogue ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, InstancePrice]:
    return load_catalogue()


def test_default_catalogue_is_the_shipped_csv():
    expected = Path(__file__).resolve().parents[1] / "results" / "prices"
    assert expected / "ec2_gpu_on_demand.csv" == DEFAULT_CATALOGUE
    assert DEFAULT_CATALOGUE.is_file()


def test_shipped_header_is_exactly_the_columns():
    first = DEFAULT_CATALOGUE.read_text(encoding="utf-8").splitlines()[0]
    assert first == HEADER


def test_shipped_catalogue_has_every_required_type(shipped):
    missing = [name for name in REQUIRED_TYPES if name not in shipped]
    assert missing == []


@pytest.mark.parametrize(
    ("instance_type", "count", "model"),
    [
        ("p3.2xlarge", 1, "V100"),
        ("p3.8xlarge", 4, "V100"),
        ("p3.16xlarge", 8, "V100"),
        ("p3dn.24xlarge", 8, "V100"),
        ("g4dn.xlarge", 1, "T4"),
        ("g4dn.12xlarge", 4, "T4"),
        ("g5.xlarge", 1, "A10G"),
        ("g5.12xlarge", 4, "A10G"),
        ("g6.xlarge", 1, "L4"),
        ("g6e.xlarge", 1, "L40S"),
        ("p4d.24xlarge", 8, "A100"),
        ("p4de.24xlarge", 8, "A100"),
        ("p5.4xlarge", 1, "H100"),
        ("p5.48xlarge", 8, "H100"),
        ("p5en.48xlarge", 8, "H200"),
    ],
)
def test_shipped_gpu_model_and_count(shipped, instance_type, count, model):
    entry = shipped[instance_type]
    assert (entry.gpu_count, entry.gpu_model) == (count, model)


@pytest.mark.parametrize(
    ("instance_type", "gpu_gib", "vcpus", "memory_gib"),
    [
        ("p3.2xlarge", 16, 8, 61),
        ("p3dn.24xlarge", 32, 96, 768),
        ("g4dn.12xlarge", 16, 48, 192),
        ("g6e.xlarge", 48, 4, 32),
        ("p4d.24xlarge", 40, 96, 1152),
        ("p4de.24xlarge", 80, 96, 1152),
        ("p5.4xlarge", 80, 16, 256),
        ("p5.48xlarge", 80, 192, 2048),
        ("p5en.48xlarge", 141, 192, 2048),
    ],
)
def test_shipped_hardware_facts(shipped, instance_type, gpu_gib, vcpus, memory_gib):
    entry = shipped[instance_type]
    assert (entry.gpu_memory_gib_per_gpu, entry.vcpus, entry.memory_gib) == (
        gpu_gib,
        vcpus,
        memory_gib,
    )


def test_every_shipped_row_has_source_date_and_region(shipped):
    for entry in shipped.values():
        assert entry.source.strip(), entry.instance_type
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", entry.price_date), entry.instance_type
        assert entry.region == "us-east-1", entry.instance_type


def test_every_shipped_price_is_positive_or_explained(shipped):
    for entry in shipped.values():
        if entry.price_per_hour_usd is None:
            assert entry.source.startswith("price not found"), entry.instance_type
        else:
            assert entry.price_per_hour_usd > 0, entry.instance_type
            assert "http" in entry.source, entry.instance_type


def test_shipped_p4_p5_prices_are_post_cut(shipped):
    """The June 2025 cut: no shipped P4/P5 price may be the old (pre-cut) list price."""
    pre_cut = {
        "p4d.24xlarge": 32.7726,
        "p4de.24xlarge": 40.96575,
        "p5.48xlarge": 98.32,
        "p5en.48xlarge": 84.8,
    }
    for name, old in pre_cut.items():
        price = shipped[name].price_per_hour_usd
        assert price is not None and price < old, name
        assert "post-cut" in shipped[name].source, name


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x1.big,T4,4,16,48,192,-1,us-east-1,2026-09-24,src", "positive"),
        ("x1.big,T4,4,16,48,192,0,us-east-1,2026-09-24,src", "positive"),
        ("x1.big,T4,4,16,48,192,nan,us-east-1,2026-09-24,src", "positive"),
        ("x1.big,T4,4,16,48,192,cheap,us-east-1,2026-09-24,src", "must be a number"),
        ("x1.big,T4,0,16,48,192,3.9,us-east-1,2026-09-24,src", "gpu_count must be at least 1"),
        ("x1.big,T4,2.5,16,48,192,3.9,us-east-1,2026-09-24,src", "gpu_count must be a whole"),
        ("x1.big,T4,,16,48,192,3.9,us-east-1,2026-09-24,src", "gpu_count is empty"),
        ("x1.big,,4,16,48,192,3.9,us-east-1,2026-09-24,src", "gpu_model is empty"),
        ("x1.big,T4,4,-16,48,192,3.9,us-east-1,2026-09-24,src", "gpu_memory_gib_per_gpu"),
        ("x1.big,T4,4,16,0,192,3.9,us-east-1,2026-09-24,src", "vcpus must be at least 1"),
        ("x1.big,T4,4,16,48,0,3.9,us-east-1,2026-09-24,src", "memory_gib"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1,2026-09-24,", "source is empty"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1,2026-09-24,  ", "source is empty"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1,,src", "price_date is empty"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1,24/09/2026,src", "YYYY-MM-DD or YYYY-MM"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1,2026-02-30,src", "not a real date"),
        ("x1.big,T4,4,16,48,192,3.9,,2026-09-24,src", "region is empty"),
        ("x1 big,T4,4,16,48,192,3.9,us-east-1,2026-09-24,src", "not an instance type"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1,2026-09-24,src,extra", "expected 10 fields"),
        ("x1.big,T4,4,16,48,192,3.9,us-east-1", "expected 10 fields"),
    ],
)
def test_bad_row_raises_with_file_and_line(tmp_path, row, message):
    path = _write(tmp_path, f"{HEADER}\n{GOOD_ROW.replace('x1.big', 'ok.big')}\n{row}\n")
    with pytest.raises(PriceError, match=re.escape(message)) as info:
        load_catalogue(path)
    assert str(info.value).startswith("bad.csv:3: ")
    assert info.value.line == 3
    assert info.value.path == path


def test_duplicate_instance_type_is_an_error(tmp_path):
    path = _write(tmp_path, f"{HEADER}\n{GOOD_ROW}\n\n{GOOD_ROW}\n")
    with pytest.raises(PriceError, match=r"^bad\.csv:4: x1\.big is listed twice .*line 2"):
        load_catalogue(path)


def test_unknown_column_is_an_error(tmp_path):
    path = _write(tmp_path, f"{HEADER},colour\n{GOOD_ROW},red\n")
    with pytest.raises(PriceError, match=r"^bad\.csv:1: unknown column\(s\) 'colour'"):
        load_catalogue(path)


def test_missing_column_is_an_error(tmp_path):
    header = HEADER.replace(",vcpus", "")
    row = GOOD_ROW.replace(",48,", ",")
    path = _write(tmp_path, f"{header}\n{row}\n")
    with pytest.raises(PriceError, match=r"^bad\.csv:1: missing column\(s\): vcpus"):
        load_catalogue(path)


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(PriceError, match=r"^bad\.csv:1: empty file"):
        load_catalogue(_write(tmp_path, ""))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(PriceError, match=r"^nowhere\.csv: cannot read"):
        load_catalogue(tmp_path / "nowhere.csv")


def test_price_error_is_a_value_error():
    assert issubclass(PriceError, ValueError)


def test_good_file_loads_with_types_and_optional_cells(tmp_path):
    rows = [
        GOOD_ROW,
        "y1.big,L4,1,,,,,us-east-1,2026-09,price not found: nothing trustworthy",
    ]
    catalogue = load_catalogue(_write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    assert catalogue["x1.big"] == InstancePrice(
        instance_type="x1.big",
        gpu_model="T4",
        gpu_count=4,
        gpu_memory_gib_per_gpu=16.0,
        vcpus=48,
        memory_gib=192.0,
        price_per_hour_usd=3.912,
        region="us-east-1",
        price_date="2026-09-24",
        source="some page https://example.org/x",
    )
    unknown = catalogue["y1.big"]
    assert unknown.price_per_hour_usd is None
    assert (unknown.gpu_memory_gib_per_gpu, unknown.vcpus, unknown.memory_gib) == (None,) * 3
    assert unknown.price_date == "2026-09"


def test_columns_may_come_in_any_order_with_a_bom(tmp_path):
    header = "source,instance_type," + ",".join(COLUMNS[1:-1])
    row = "src,x1.big,T4,4,16,48,192,3.912,us-east-1,2026-09-24"
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + header + "\n" + row + "\n").encode("utf-8"))
    assert load_catalogue(path)["x1.big"].price_per_hour_usd == 3.912


# -- merge ----------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path) -> dict[str, InstancePrice]:
    rows = [
        "p3.16xlarge,V100,8,16,64,488,24.48,us-east-1,2026-09-24,base",
        "g5.xlarge,A10G,1,24,4,16,1.006,us-east-1,2026-09-24,base",
    ]
    return load_catalogue(_write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n", "base.csv"))


def test_merge_price_only_override_of_a_known_type(tmp_path, base):
    override = _write(
        tmp_path,
        "instance_type,price_per_hour_usd,region,price_date,source\n"
        "p3.16xlarge,7.5,us-west-2,2026-11-01,spot price seen in the console\n",
        "mine.csv",
    )
    merged = merge(base, override)
    assert merged["p3.16xlarge"] == InstancePrice(
        instance_type="p3.16xlarge",
        gpu_model="V100",
        gpu_count=8,
        gpu_memory_gib_per_gpu=16.0,
        vcpus=64,
        memory_gib=488.0,
        price_per_hour_usd=7.5,
        region="us-west-2",
        price_date="2026-11-01",
        source="spot price seen in the console",
    )
    assert merged["g5.xlarge"] == base["g5.xlarge"]
    assert base["p3.16xlarge"].price_per_hour_usd == 24.48  # base untouched


def test_merge_known_type_with_empty_hardware_cells_keeps_hardware(tmp_path, base):
    override = _write(
        tmp_path, f"{HEADER}\ng5.xlarge,,,,,,0.9,us-east-1,2026-11-01,ours\n", "mine.csv"
    )
    entry = merge(base, override)["g5.xlarge"]
    assert (entry.gpu_model, entry.gpu_count, entry.vcpus) == ("A10G", 1, 4)
    assert (entry.price_per_hour_usd, entry.source) == (0.9, "ours")


def test_merge_known_type_may_correct_hardware(tmp_path, base):
    override = _write(
        tmp_path, f"{HEADER}\ng5.xlarge,,,,8,32,0.9,us-east-1,2026-11-01,ours\n", "mine.csv"
    )
    entry = merge(base, override)["g5.xlarge"]
    assert (entry.gpu_count, entry.vcpus, entry.memory_gib) == (1, 8, 32.0)


def test_merge_new_type_with_full_columns(tmp_path, base):
    override = _write(
        tmp_path, f"{HEADER}\ng6.xlarge,L4,1,24,4,16,0.8048,us-east-1,2026-09-24,x\n", "mine.csv"
    )
    merged = merge(base, override)
    assert set(merged) == {"p3.16xlarge", "g5.xlarge", "g6.xlarge"}
    assert merged["g6.xlarge"].gpu_model == "L4"
    assert merged["g6.xlarge"].price_per_hour_usd == 0.8048


def test_merge_new_type_missing_hardware_columns_is_an_error(tmp_path, base):
    override = _write(
        tmp_path,
        "instance_type,price_per_hour_usd,region,price_date,source\n"
        "p3.16xlarge,7.5,us-east-1,2026-11-01,fine\n"
        "g6.xlarge,0.8,us-east-1,2026-11-01,new but no hardware\n",
        "mine.csv",
    )
    with pytest.raises(PriceError, match=r"^mine\.csv:3: g6\.xlarge is not in the catalogue"):
        merge(base, override)


def test_merge_new_type_with_an_empty_hardware_cell_is_an_error(tmp_path, base):
    override = _write(
        tmp_path, f"{HEADER}\ng6.xlarge,L4,1,24,,16,0.8048,us-east-1,2026-09-24,x\n", "mine.csv"
    )
    with pytest.raises(PriceError, match=r"^mine\.csv:2: .*missing or empty: vcpus$"):
        merge(base, override)


def test_merge_override_without_price_is_an_error(tmp_path, base):
    override = _write(
        tmp_path,
        "instance_type,price_per_hour_usd,region,price_date,source\n"
        "g5.xlarge,,us-east-1,2026-11-01,x\n",
        "mine.csv",
    )
    with pytest.raises(PriceError, match=r"^mine\.csv:2: price_per_hour_usd is empty"):
        merge(base, override)


def test_merge_override_file_needs_the_price_columns(tmp_path, base):
    override = _write(tmp_path, "instance_type,price_per_hour_usd\ng5.xlarge,1\n", "mine.csv")
    with pytest.raises(PriceError, match=r"^mine\.csv:1: missing column\(s\): region"):
        merge(base, override)


def test_merge_duplicate_in_one_override_is_an_error(tmp_path, base):
    row = "g5.xlarge,0.9,us-east-1,2026-11-01,x"
    override = _write(
        tmp_path,
        f"instance_type,price_per_hour_usd,region,price_date,source\n{row}\n{row}\n",
        "mine.csv",
    )
    with pytest.raises(PriceError, match=r"^mine\.csv:3: g5\.xlarge is listed twice"):
        merge(base, override)


def test_merge_later_overrides_win_and_see_earlier_additions(tmp_path, base):
    first = _write(
        tmp_path, f"{HEADER}\ng6.xlarge,L4,1,24,4,16,0.8048,us-east-1,2026-09-24,a\n", "a.csv"
    )
    second = _write(
        tmp_path,
        "instance_type,price_per_hour_usd,region,price_date,source\n"
        "g6.xlarge,0.4,us-east-1,2026-11-01,b\n",
        "b.csv",
    )
    merged = merge(base, str(first), second)
    assert (merged["g6.xlarge"].price_per_hour_usd, merged["g6.xlarge"].source) == (0.4, "b")


def test_merge_accepts_a_loaded_mapping(base):
    extra = {"local": local_price(1.5, "RTX 4090", price_date="2026-11-26")}
    merged = merge(base, extra)
    assert merged["local"].price_per_hour_usd == 1.5
    assert "local" not in base


def test_merge_with_the_shipped_catalogue(tmp_path, shipped):
    override = _write(
        tmp_path,
        "instance_type,price_per_hour_usd,region,price_date,source\n"
        "p5.48xlarge,30,us-east-1,2026-11-20,spot\n",
        "mine.csv",
    )
    entry = merge(shipped, override)["p5.48xlarge"]
    assert (entry.gpu_model, entry.gpu_count, entry.price_per_hour_usd) == ("H100", 8, 30.0)


# -- lookup, with_price, local_price --------------------------------------------------------


def test_lookup(base):
    assert lookup(base, "g5.xlarge") is base["g5.xlarge"]
    assert lookup(base, "  G5.XLARGE ") is base["g5.xlarge"]
    assert lookup(base, "g5.2xlarge") is None


def test_with_price_keeps_hardware_and_replaces_price_fields():
    entry = _entry()
    spot = with_price(entry, 7.3, "spot, console, us-east-1a", "2026-11-20")
    assert spot == _entry(
        price_per_hour_usd=7.3, source="spot, console, us-east-1a", price_date="2026-11-20"
    )
    assert entry.price_per_hour_usd == 24.48


def test_with_price_defaults_the_date_to_today():
    before = datetime.date.today().isoformat()
    spot = with_price(_entry(), 7.3, "spot")
    assert spot.price_date in {before, datetime.date.today().isoformat()}


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "7", True])
def test_with_price_rejects_bad_prices(bad):
    with pytest.raises(PriceError, match="price_per_hour_usd"):
        with_price(_entry(), bad, "spot", "2026-11-20")


def test_with_price_rejects_empty_source_and_bad_date():
    with pytest.raises(PriceError, match="source is empty"):
        with_price(_entry(), 7.3, "  ", "2026-11-20")
    with pytest.raises(PriceError, match="YYYY-MM-DD"):
        with_price(_entry(), 7.3, "spot", "20 Nov 2026")


def test_local_price():
    before = datetime.date.today().isoformat()
    entry = local_price(2.5, "NVIDIA H200", gpu_count=1)
    assert entry.instance_type == "local"
    assert entry.source == "given on the command line"
    assert entry.price_date in {before, datetime.date.today().isoformat()}
    assert (entry.gpu_model, entry.gpu_count, entry.price_per_hour_usd) == ("NVIDIA H200", 1, 2.5)
    assert (entry.gpu_memory_gib_per_gpu, entry.vcpus, entry.memory_gib) == (None, None, None)


def test_local_price_without_gpu_model_and_with_several_gpus():
    entry = local_price(8, gpu_count=4, price_date="2026-11-26")
    assert (entry.gpu_model, entry.gpu_count, entry.price_per_hour_usd) == ("unknown", 4, 8.0)
    assert price_for_run(entry, 1)["price_per_hour_used_usd"] == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize(("price", "count"), [(0, 1), (-2.5, 1), (2.5, 0), (2.5, 1.5)])
def test_local_price_rejects_bad_input(price, count):
    with pytest.raises(PriceError):
        local_price(price, "GPU", gpu_count=count)


# -- price_for_run --------------------------------------------------------------------------


def test_price_for_run_two_of_eight_gpus():
    figures = price_for_run(_entry(), 2)
    assert figures == {
        "instance_type": "p3.16xlarge",
        "price_per_hour_usd": 24.48,
        "price_per_gpu_hour_usd": pytest.approx(3.06, rel=1e-12),
        "gpus_used": 2,
        "gpu_count": 8,
        "share_used": 0.25,
        "price_per_hour_used_usd": pytest.approx(6.12, rel=1e-12),
        "source": "test",
        "price_date": "2026-09-24",
        "region": "us-east-1",
    }


@pytest.mark.parametrize(
    ("price", "count", "used", "per_gpu", "share", "used_price"),
    [
        (55.04, 8, 8, 6.88, 1.0, 55.04),
        (55.04, 8, 1, 6.88, 0.125, 6.88),
        (3.912, 4, 3, 0.978, 0.75, 2.934),
        (1.006, 1, 1, 1.006, 1.0, 1.006),
        (21.957642, 8, 4, 2.74470525, 0.5, 10.978821),
    ],
)
def test_price_for_run_arithmetic(price, count, used, per_gpu, share, used_price):
    entry = _entry(gpu_count=count, price_per_hour_usd=price)
    figures = price_for_run(entry, used)
    assert figures["price_per_hour_usd"] == price
    assert figures["price_per_gpu_hour_usd"] == pytest.approx(per_gpu, rel=1e-12)
    assert figures["share_used"] == share
    assert figures["price_per_hour_used_usd"] == pytest.approx(used_price, rel=1e-12)


def test_price_for_run_without_a_price_stays_none():
    figures = price_for_run(_entry(price_per_hour_usd=None, source="price not found: x"), 2)
    assert figures["price_per_hour_usd"] is None
    assert figures["price_per_gpu_hour_usd"] is None
    assert figures["price_per_hour_used_usd"] is None
    assert (figures["gpus_used"], figures["gpu_count"], figures["share_used"]) == (2, 8, 0.25)


@pytest.mark.parametrize("used", [0, -1, 9, 2.0, True])
def test_price_for_run_rejects_gpus_used_out_of_range(used):
    with pytest.raises(PriceError, match="gpus_used"):
        price_for_run(_entry(), used)


# -- the harness core stays framework-free --------------------------------------------------


def test_prices_module_imports_only_the_stdlib():
    tree = ast.parse(Path(prices.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = {"__future__", "collections", "csv", "dataclasses", "datetime", "math"}
    assert imported <= allowed | {"pathlib", "re", "typing"}
