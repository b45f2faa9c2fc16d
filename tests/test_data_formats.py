"""The real-format readers and writers: VOC folders, MXNet RecordIO, aclImdb."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from data import imdb, recordio, voc
from data.recordio import (
    MAGIC,
    DetectionItem,
    DetectionLayout,
    DetectionRecordFile,
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordWriter,
    decode_label,
    encode_label,
    pack,
    read_record,
    split_label,
    unpack,
    write_detection_records,
    write_record,
)
from data.samples import IMDB_SAMPLE, make_imdb, make_voc, make_voc_record

M = struct.pack("<I", MAGIC)


def _word(flag: int, length: int) -> bytes:
    return struct.pack("<II", MAGIC, flag << 29 | length)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    make_voc(root)
    make_voc_record(root)
    return root


# --- VOC ---------------------------------------------------------------------------------


def test_voc_classes_are_gluoncvs_twenty_in_order() -> None:
    assert len(voc.VOC_CLASSES) == 20
    assert voc.VOC_CLASSES[:3] == ("aeroplane", "bicycle", "bird")
    assert voc.VOC_CLASSES.index("person") == 14
    assert voc.VOC_CLASSES[-1] == "tvmonitor"


def test_splits_parse() -> None:
    assert voc.parse_splits("2007/trainval+2012/trainval") == (
        ("VOC2007", "trainval"),
        ("VOC2012", "trainval"),
    )
    assert voc.parse_splits("VOC2007/test") == (("VOC2007", "test"),)
    with pytest.raises(voc.VocError, match="YEAR/NAME"):
        voc.parse_splits("2007")


def test_voc_reads_splits_in_order_with_gluoncv_boxes(
    sample: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        data = voc.VocDetection(sample)  # the VOCdevkit's parent is found too
    assert [i.image_id for i in data.items] == [
        "000005",
        "000007",
        "000009",
        "2008_000002",
        "2008_000008",
    ]
    # 1-based XML corners minus 1; class ids in GluonCV's order; difficult kept
    np.testing.assert_array_equal(data.label(0), [[7, 5, 39, 29, 11, 0], [29, 9, 63, 47, 14, 0]])
    np.testing.assert_array_equal(data.label(1), [[4, 4, 29, 39, 7, 0], [19, 29, 44, 59, 8, 1]])
    # the unknown class and the box past the image's right edge are skipped, with a warning
    np.testing.assert_array_equal(data.label(2), [[9, 19, 69, 54, 6, 0]])
    assert "invalid box" in caplog.text and "000009.xml" in caplog.text
    np.testing.assert_array_equal(data.label(4), [[9, 9, 49, 69, 16, 0]])
    assert data.label(0).dtype == np.float32
    image, label = data[3]
    assert image.shape == (56, 72, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, [[3, 3, 59, 39, 0, 0], [39, 29, 69, 54, 19, 0]])
    # the drawn aeroplane (class 0) is black: inside its box the JPEG stays near 0
    assert image[10:30, 10:50].mean() < 8


def test_voc_single_split_and_missing_split(sample: Path) -> None:
    test = voc.VocDetection(sample / "VOCdevkit", "2007/test")
    assert len(test) == 1
    np.testing.assert_array_equal(test.label(0), [[11, 11, 49, 39, 2, 0], [0, 0, 9, 9, 2, 1]])
    with pytest.raises(voc.VocError, match="no split file"):
        voc.VocDetection(sample, "2012/test")
    with pytest.raises(voc.VocError, match="no VOCdevkit layout"):
        voc.VocDetection(sample / "VOCdevkit" / "VOC2007" / "JPEGImages")


# --- RecordIO framing --------------------------------------------------------------------


def test_a_record_is_magic_length_data_and_padding() -> None:
    out = io.BytesIO()
    write_record(out, b"hello")
    write_record(out, b"four")
    write_record(out, b"")
    assert out.getvalue() == (_word(0, 5) + b"hello\0\0\0" + _word(0, 4) + b"four" + _word(0, 0))
    out.seek(0)
    assert [read_record(out) for _ in range(4)] == [b"hello", b"four", b"", None]


def test_a_payload_holding_the_magic_is_split_around_it() -> None:
    payload = M + b"abcd" + M + b"xy" + M[:2]  # aligned copies at 0 and 8
    out = io.BytesIO()
    write_record(out, payload)
    assert out.getvalue() == (_word(1, 0) + _word(2, 4) + b"abcd" + _word(3, 4) + b"xy" + M[:2])
    out.seek(0)
    assert read_record(out) == payload
    # a copy at an unaligned offset stays inside the data
    unaligned = b"ab" + M + b"cd"
    out = io.BytesIO()
    write_record(out, unaligned)
    assert out.getvalue() == _word(0, 8) + unaligned
    out.seek(0)
    assert read_record(out) == unaligned


def test_broken_files_are_refused() -> None:
    with pytest.raises(RecordIOError, match="magic 0x12345678"):
        read_record(io.BytesIO(struct.pack("<II", 0x12345678, 4) + b"abcd"))
    with pytest.raises(RecordIOError, match="data is cut short"):
        read_record(io.BytesIO(_word(0, 8) + b"abc"))
    with pytest.raises(RecordIOError, match="header is cut short"):
        read_record(io.BytesIO(_word(1, 0) + b"\x0a"))


def test_writer_index_and_random_access(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "a.rec") as writer:
        for key, payload in ((3, b"x" * 5), (1, b"y" * 8), (7, b"")):
            writer.write(key, payload)
    assert (tmp_path / "a.idx").read_text() == "3\t0\n1\t16\n7\t32\n"
    reader = RecordReader(tmp_path / "a.rec")
    assert reader.keys == [3, 1, 7] and len(reader) == 3
    assert reader.read(1) == b"y" * 8
    assert reader.read(3) == b"x" * 5
    clone = pickle.loads(pickle.dumps(reader))  # as handed to a DataLoader worker
    assert clone.read(7) == b"" and clone.read(1) == b"y" * 8
    with open(tmp_path / "a.rec", "rb") as stream:  # in file order, without the index
        assert list(iter(lambda: recordio.read_record(stream), None)) == [b"x" * 5, b"y" * 8, b""]
    (tmp_path / "b.rec").write_bytes(b"")
    with pytest.raises(RecordIOError, match="no index file"):
        RecordReader(tmp_path / "b.rec")


def test_image_record_header() -> None:
    scalar = pack(IRHeader(0, 2.5, 11, 0), b"JPEG")
    assert scalar == struct.pack("<IfQQ", 0, 2.5, 11, 0) + b"JPEG"
    assert unpack(scalar) == (IRHeader(0, 2.5, 11, 0), b"JPEG")
    labels = np.array([4, 5, 0.25], dtype=np.float32)
    packed = pack(IRHeader(0, labels, 12, 0), b"JPEG")
    assert packed == struct.pack("<IfQQ", 3, 0.0, 12, 0) + labels.tobytes() + b"JPEG"
    header, payload = unpack(packed)
    assert (header.flag, header.id, header.id2, payload) == (3, 12, 0, b"JPEG")
    np.testing.assert_array_equal(header.label, labels)


# --- detection labels --------------------------------------------------------------------


def test_labels_encode_in_the_workshop_layouts() -> None:
    label = [[10, 20, 30, 40, 3, 1], [0, 0, 100, 200, 19, 0]]
    packed = encode_label(label, 100, 200)
    np.testing.assert_array_equal(
        packed,
        np.array([4, 6, 100, 200, 3, 0.1, 0.1, 0.3, 0.2, 1, 19, 0, 0, 1, 1, 0], dtype=np.float32),
    )
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(
        encode_label(label, 100, 200, DetectionLayout(4, 5)),
        np.array([4, 5, 100, 200, 3, 0.1, 0.1, 0.3, 0.2, 19, 0, 0, 1, 1], dtype=np.float32),
    )
    np.testing.assert_array_equal(
        encode_label(label[:1], 100, 200, DetectionLayout(2, 6)),
        np.array([2, 6, 3, 0.1, 0.1, 0.3, 0.2, 1], dtype=np.float32),
    )
    with pytest.raises(RecordIOError, match="header width must be 2 or 4"):
        DetectionLayout(3, 5)


def test_labels_decode_in_gluoncv_order() -> None:
    sagemaker = np.array([4, 5, 640, 480, 7, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(decode_label(sagemaker, 640, 480), [[160, 240, 480, 480, 7]])
    np.testing.assert_array_equal(decode_label(sagemaker), [[0.25, 0.5, 0.75, 1.0, 7]])
    example_ssd = np.array([2, 6, 1, 0, 0, 0.5, 0.5, 1, 14, 0.5, 0.5, 1, 1, 0], np.float32)
    np.testing.assert_array_equal(
        decode_label(example_ssd, 10, 20), [[0, 0, 5, 10, 1, 1], [5, 10, 10, 20, 14, 0]]
    )
    # any header A >= 2 and object width B >= 5: extras ride along
    wide = np.array([3, 7, 99, 2, 0.1, 0.2, 0.3, 0.4, 8, 9], dtype=np.float32)
    a, b, objects = split_label(wide)
    assert (a, b) == (3, 7)
    np.testing.assert_array_equal(objects, np.float32([[2, 0.1, 0.2, 0.3, 0.4, 8, 9]]))
    for bad, message in (
        ([2, 4, 1, 0, 0, 1], "must be >= 5"),
        ([2, 5, 1, 0, 0, 1, 1, 2], "broken label"),
        ([4, 5, 100, 100], "expected a label of >= 9"),
        ([1, 5, 1, 0, 0, 1, 1], "A must be >= 2"),
    ):
        with pytest.raises(RecordIOError, match=message):
            decode_label(np.array(bad, dtype=np.float32))


def test_voc_packed_and_read_back(sample: Path) -> None:
    folder = voc.VocDetection(sample)
    records = DetectionRecordFile(sample / "voc.rec")
    assert len(records) == len(folder) == 5
    for i in range(len(folder)):
        image, label = records[i]
        want_image, want_label = folder[i]
        np.testing.assert_array_equal(image, want_image)  # the JPEG bytes are stored as is
        np.testing.assert_allclose(label, want_label, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(records.label(i), label)
        header, encoded = records.raw(i)
        assert header.id == i and encoded == folder.items[i].image_path.read_bytes()
        assert header.label[:4].tolist() == [4, 6, image.shape[1], image.shape[0]]


def test_images_without_objects_are_not_packed(tmp_path: Path) -> None:
    items = [  # any bytes do as images: nothing decodes them
        DetectionItem(b"first", 10, 10, np.array([[1, 1, 5, 5, 2]], dtype=np.float32)),
        DetectionItem(b"empty", 10, 10, np.zeros((0, 6), dtype=np.float32)),
        DetectionItem(b"third", 20, 10, np.array([[0, 0, 10, 5, 4, 1]], dtype=np.float32)),
    ]
    assert write_detection_records(tmp_path / "x.rec", items, DetectionLayout(2, 5)) == 2
    reader = RecordReader(tmp_path / "x.rec")
    header, payload = unpack(reader.read(1))
    assert payload == b"third" and header.id == 1
    np.testing.assert_array_equal(header.label, np.float32([2, 5, 4, 0, 0, 0.5, 0.5]))


# --- IMDB --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imdb(tmp_path_factory.mktemp("imdb"))


def test_imdb_order_labels_and_ratings(acl: Path) -> None:
    train = imdb.read_imdb(acl.parent, "train")
    assert [(r.review_id, r.rating, r.label) for r in train] == [
        (2, 7, 1),
        (10, 9, 1),
        (0, 4, 0),
        (3, 1, 0),
    ]
    assert train[1].text == "A GREAT film.<br /><br />I loved it!"  # kept, as the lab did
    test = imdb.read_imdb(acl, "test")
    assert [(r.text, r.label) for r in test] == [
        (IMDB_SAMPLE["test"]["pos"][0][1], 1),
        ("Bad, bad, bad.", 0),
    ]


def test_imdb_breaks_can_become_spaces(acl: Path) -> None:
    train = imdb.read_imdb(acl, "train", breaks="space")
    assert train[1].text == "A GREAT film.  I loved it!"
    assert imdb.clean_review("a<BR>b<br/>c<br  />d", "space") == "a b c d"
    with pytest.raises(ValueError, match="breaks must be one of"):
        imdb.read_imdb(acl, "train", breaks="strip")


def test_imdb_layout_is_checked(tmp_path: Path) -> None:
    root = make_imdb(tmp_path)
    assert imdb.count_reviews(tmp_path) == {
        "train": {"pos": 2, "neg": 2},
        "test": {"pos": 1, "neg": 1},
    }
    (root / "test" / "pos" / "5_3.txt").write_text("mislabelled")
    with pytest.raises(imdb.ImdbError, match="rating 3 does not belong in pos/"):
        imdb.read_imdb(root, "test")
    (root / "test" / "pos" / "5_3.txt").unlink()
    (root / "test" / "neg" / "notes.md").write_text("x")
    with pytest.raises(imdb.ImdbError, match="not a review file name"):
        imdb.count_reviews(root)
    with pytest.raises(imdb.ImdbError, match="split must be one of"):
        imdb.read_imdb(root, "unsup")
    with pytest.raises(imdb.ImdbError, match="no aclImdb layout"):
        imdb.read_imdb(root / "train", "train")
