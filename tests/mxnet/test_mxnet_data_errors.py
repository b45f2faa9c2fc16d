"""The MXNet path names the file behind a sample it cannot read (MXNet's decoder does not),
in a loader worker process too. Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.samples import make_voc, make_voc_record
from models import gluon_data
from models.gluon_data import DataError


def _not_an_image(devkit: Path, split: str) -> Path:
    listing = devkit / "VOC2007" / "ImageSets" / "Main" / f"{split}.txt"
    image = devkit / "VOC2007" / "JPEGImages" / f"{listing.read_text().split()[0]}.jpg"
    image.write_bytes(b"not a JPEG at all")
    return image


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_voc_image_is_named(tmp_path, workers):
    image = _not_an_image(make_voc(tmp_path), "test")
    stream = gluon_data.ssd_stream(str(tmp_path), "infer", 64, batch_size=1, workers=workers)
    try:
        with pytest.raises(DataError, match=rf"^{image}: cannot read the sample \(MXNetError: "):
            stream.next()
    finally:
        stream.close()


def test_an_unreadable_record_is_named_with_its_index(tmp_path):
    _not_an_image(make_voc(tmp_path), "trainval")
    rec = make_voc_record(tmp_path, "2007/trainval")
    dataset, facts = gluon_data.detection_dataset(str(rec), "infer")
    assert facts["format"] == "recordio" and len(dataset) == facts["samples"]
    with pytest.raises(DataError, match=rf"^{rec}: record 0 \(key 0\): cannot read the sample"):
        dataset[0]
    image, label = dataset[1]
    assert image.shape[2] == 3 and label.shape[1] >= 5
