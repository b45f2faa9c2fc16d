"""Datasets checked up front and named: an empty or malformed ``--data`` is a one-line usage
error before any worker starts; a file that cannot be decoded is named (and its record in a
RecordIO file), in the loader's workers too; ``bench data verify`` reads every file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.run.runner import collect
from bench.run.store import new_record
from bench.schema.record import Environment
from bench.schema.spec import RunSpec
from data.checks import check_record_file
from data.recordio import DetectionRecordFile, RecordIOError, read_index
from data.samples import make_imdb, make_voc, make_voc_record, write_vocab
from data.selection import DataError
from data.voc import VocDetection, VocError


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def bad_run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: object) -> str:
    """``bench run`` that must stop before anything runs: exit 2, one line, nothing written."""
    out = tmp_path / "runs"
    argv = ["run", "--device", "cpu", "--out", str(out), *map(str, args)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    return one_line(captured.err)


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def first_image(devkit: Path) -> Path:
    listing = devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    return devkit / "VOC2007" / "JPEGImages" / f"{listing.read_text().split()[0]}.jpg"


# -- --data checked before a worker starts ---------------------------------------------------
def test_an_empty_data_folder_is_refused_like_a_missing_one(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = bad_run(capsys, tmp_path, "--workload", "ssd", "--mode", "train", "--data", empty)
    assert line == (
        f"bench: error: --data {empty}: no VOCdevkit layout (VOC20xx/Annotations) at {empty}"
    )


def test_an_empty_split_list_is_refused(tmp_path, capsys):
    devkit = make_voc(tmp_path)
    for listing in devkit.glob("VOC20*/ImageSets/Main/trainval.txt"):
        listing.write_text("")
    line = bad_run(capsys, tmp_path, "--workload", "ssd", "--mode", "train", "--data", devkit)
    assert line.startswith(f"bench: error: --data {devkit}: ")
    assert line.endswith("trainval.txt: an empty split (no image ids)")


def test_a_missing_image_of_a_split_is_named(tmp_path, capsys):
    devkit = make_voc(tmp_path)
    image = first_image(devkit)
    image.unlink()
    line = bad_run(capsys, tmp_path, "--workload", "ssd", "--mode", "train", "--data", devkit)
    assert "1 image file(s) of its" in line and line.endswith(f"missing, e.g. {image}")


def test_a_record_file_cut_short_is_refused_naming_the_record(tmp_path, capsys):
    rec = make_voc_record(tmp_path)
    count = len(DetectionRecordFile(rec))
    truncate(rec, 0.6)
    line = bad_run(capsys, tmp_path, "--workload", "ssd", "--data", rec)
    assert line.startswith(f"bench: error: --data {rec}: record ")
    assert line.endswith("bytes run past the end of the file")
    position = int(line.split(": record ")[1].split()[0])
    assert 0 < position < count


def test_an_empty_index_is_refused(tmp_path):
    rec = make_voc_record(tmp_path)
    rec.with_suffix(".idx").write_text("")
    with pytest.raises(DataError, match=r"voc\.idx: an empty index \(no records\)"):
        check_record_file(rec)


def test_a_review_folder_without_reviews_is_refused(tmp_path, capsys):
    imdb = make_imdb(tmp_path)
    for review in (imdb / "test").glob("*/*.txt"):
        review.unlink()
    vocab = write_vocab(tmp_path / "vocab.txt")
    line = bad_run(capsys, tmp_path, "--workload", "bert", "--data", imdb, "--vocab", vocab)
    assert line.startswith(f"bench: error: --data {imdb}: no reviews in {imdb}/test/")


def test_a_missing_vocabulary_file_is_named(tmp_path, capsys):
    imdb = make_imdb(tmp_path)
    vocab = tmp_path / "no" / "vocab.txt"
    line = bad_run(capsys, tmp_path, "--workload", "bert", "--data", imdb, "--vocab", vocab)
    assert line == f"bench: error: --vocab: vocabulary file {vocab} does not exist"


def test_a_negative_batch_timeout_gets_its_own_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--workload", "null", "--batch-timeout", "-1ms"])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "bench run: error: argument --batch-timeout: a latency is 0 or more, not '-1ms'"
    )


# -- decoding errors name the file -----------------------------------------------------------
def test_a_truncated_image_is_named_by_the_voc_reader(tmp_path):
    devkit = make_voc(tmp_path)
    image = truncate(first_image(devkit))
    voc = VocDetection(devkit, "2007/trainval")
    with pytest.raises(VocError, match=rf"^{image}: cannot decode the image \(OSError: "):
        voc[0]


def test_a_truncated_image_is_named_with_its_record(tmp_path):
    devkit = make_voc(tmp_path)
    truncate(first_image(devkit))
    rec = make_voc_record(tmp_path, "2007/trainval")
    with pytest.raises(RecordIOError, match=rf"^{rec}: record 0 \(key 0\): cannot decode"):
        DetectionRecordFile(rec)[0]


def test_a_record_cut_short_is_named_with_its_index(tmp_path):
    rec = make_voc_record(tmp_path, "2007/trainval")
    offsets = sorted(read_index(rec.with_suffix(".idx")).values())
    rec.write_bytes(rec.read_bytes()[: offsets[1] + 10])
    records = DetectionRecordFile(rec)
    assert records[0][0].ndim == 3
    with pytest.raises(RecordIOError) as info:
        records[1]
    assert str(info.value) == (
        f"{rec}: record 1 (key 1): at byte {offsets[1]}: truncated RecordIO file (a record's "
        "data is cut short)"
    )
    with pytest.raises(RecordIOError, match=r": record 2 \(key 2\): points past the end"):
        records[2]


def test_a_loader_worker_error_names_the_file(tmp_path):
    """PyTorch re-raises a worker's error as 'Caught ... in DataLoader worker process 0.';
    the stream's error leads with the reader's message instead."""
    from models.torch_data import ssd_stream

    devkit = make_voc(tmp_path)
    listing = devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    image = devkit / "VOC2007" / "JPEGImages" / f"{listing.read_text().split()[0]}.jpg"
    truncate(image)
    stream = ssd_stream(
        str(devkit), "infer", 64, batch_size=1, workers=1, seed=0, ranks=(0, 1), pin_memory=False
    )
    try:
        with pytest.raises(DataError) as info:
            stream.next()
    finally:
        stream.close()
    message = f"{type(info.value).__name__}: {info.value}".splitlines()[0]
    assert message.startswith(f"DataError: {image}: cannot decode the image (OSError: ")
    assert message.endswith("(DataLoader worker process 0)")


# -- error records say where the data came from ----------------------------------------------
def test_a_failed_data_run_records_its_data_source(tmp_path):
    spec = RunSpec(workload="ssd", device="cpu", data=str(tmp_path), loader_workers=3)
    assert new_record(spec, Environment()).data.source == str(tmp_path)
    crashed = collect(tmp_path / "no-result.json", spec, -9, "Killed")
    assert crashed.outcome.status == "error"
    assert crashed.data.source == str(tmp_path) and crashed.data.loader_workers == 3
    synthetic = new_record(RunSpec(workload="ssd", device="cpu"), Environment())
    assert synthetic.data.source == "synthetic"


# -- bench data verify -----------------------------------------------------------------------
def verify(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, list[str], str]:
    code = main(["data", "verify", str(path), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_verify_a_good_voc_folder(tmp_path, capsys):
    devkit = make_voc(tmp_path)
    files = len(list(devkit.rglob("*.jpg"))) + len(list(devkit.rglob("Annotations/*.xml")))
    assert verify(capsys, devkit) == (0, [f"{devkit}: {files:,} files checked, 0 bad"], "")


def test_verify_finds_a_truncated_image_that_a_run_might_never_sample(tmp_path, capsys):
    devkit = make_voc(tmp_path)
    image = truncate(first_image(devkit))
    xml = devkit / "VOC2012" / "Annotations"
    broken = sorted(xml.glob("*.xml"))[0]
    broken.write_text("<annotation><size>")
    code, out, _ = verify(capsys, devkit)
    assert code == 1
    assert out[-1].endswith(", 2 bad")
    bad = sorted(out[:-1])
    assert len(bad) == 2
    assert bad[0].startswith(f"{image}: cannot decode the image (OSError: ")
    assert bad[1].startswith(f"{broken}: ParseError: ")


def test_verify_names_a_bad_record(tmp_path, capsys):
    devkit = make_voc(tmp_path)
    truncate(first_image(devkit))
    rec = make_voc_record(tmp_path, "2007/trainval")
    code, out, _ = verify(capsys, rec)
    assert code == 1
    assert out[0].startswith(f"{rec}: record 0 (key 0): cannot decode the image (OSError: ")
    records = len(DetectionRecordFile(rec))
    assert out[-1] == f"{rec}: {records:,} records checked, 1 bad"
    offsets = sorted(read_index(rec.with_suffix(".idx")).values())
    assert records == len(offsets) == 3
    rec.write_bytes(rec.read_bytes()[: offsets[1] + 10])  # into record 1: record 2 is gone
    first = out[0]
    code, out, _ = verify(capsys, rec)
    assert code == 1
    assert out == [
        first,  # record 0's image, as before
        f"{rec}: record 1 (key 1): at byte {offsets[1]}: truncated RecordIO file (a record's "
        "data is cut short)",
        f"{rec}: record 2 (key 2): points past the end of the file",
        f"{rec}: 3 records checked, 3 bad",
    ]


def test_verify_a_review_folder_and_a_non_dataset(tmp_path, capsys):
    imdb = make_imdb(tmp_path)
    (imdb / "train" / "pos" / "10_9.txt").write_bytes(b"\xff\xfe bad")
    code, out, _ = verify(capsys, imdb)
    assert code == 1 and out[0].startswith(f"{imdb}/train/pos/10_9.txt: UnicodeDecodeError: ")
    assert out[-1].endswith(", 1 bad")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    code, out, err = verify(capsys, elsewhere)
    assert code == 2 and out == []
    assert one_line(err) == (
        f"bench: error: {elsewhere}: not a dataset this tool knows (VOCdevkit, aclImdb, .rec)"
    )
