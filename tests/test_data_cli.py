"""``bench data``: downloads (against a local HTTP server with Range support: nothing
leaves this machine), packing VOC into RecordIO, checking IMDB, describing datasets."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import datasets
from bench.cli import main
from bench.datasets import DataError, fetch
from bench.run import registry
from bench.run.workload import WorkloadInfo
from data.recordio import DetectionRecordFile
from data.samples import make_imdb, make_voc, write_vocab
from data.sources import Archive, Source

CONTENT = bytes(range(256)) * 40  # 10,240 bytes


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    #: per request, how many body bytes to send before dropping the connection
    cuts: list[int | None] = field(default_factory=list)
    requests: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        asked = self.headers.get("Range")
        state.requests.append(asked)
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if asked and state.ranges:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = state.cuts.pop(0) if state.cuts else None
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    state: ServerState


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState(files={"/file.bin": CONTENT})
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


def archive(url: str, data: bytes = CONTENT, **kw: object) -> Archive:
    fields: dict[str, object] = {
        "name": "file.bin",
        "url": f"{url}/file.bin",
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **kw,
    }
    return Archive(**fields)


def test_download_verifies_and_then_uses_the_cache(server, tmp_path: Path) -> None:
    url, state = server
    path = fetch(archive(url), tmp_path)
    assert path == tmp_path / "file.bin" and path.read_bytes() == CONTENT
    assert fetch(archive(url, digest="md5:" + hashlib.md5(CONTENT).hexdigest()), tmp_path)
    assert state.requests == [None]  # the second call found it in the cache


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path: Path) -> None:
    url, state = server
    state.cuts = [1000]
    with pytest.raises(DataError, match="stopped after 1,000 of 10,240 bytes.*run the command"):
        fetch(archive(url), tmp_path)
    assert (tmp_path / "file.bin.part").stat().st_size == 1000
    assert fetch(archive(url), tmp_path).read_bytes() == CONTENT
    assert state.requests == [None, "bytes=1000-"]
    assert not (tmp_path / "file.bin.part").exists()


def test_a_server_without_ranges_starts_over(server, tmp_path: Path) -> None:
    url, state = server
    state.ranges = False
    (tmp_path / "file.bin.part").write_bytes(b"x" * 500)
    assert fetch(archive(url), tmp_path).read_bytes() == CONTENT
    assert state.requests == ["bytes=500-"]


def test_a_complete_part_is_not_fetched_again(server, tmp_path: Path) -> None:
    url, state = server
    (tmp_path / "file.bin.part").write_bytes(CONTENT)
    assert fetch(archive(url), tmp_path).read_bytes() == CONTENT
    assert state.requests == []


def test_a_checksum_mismatch_is_refused_and_removed(server, tmp_path: Path) -> None:
    url, _ = server
    wrong = "md5:" + hashlib.md5(b"something else").hexdigest()
    with pytest.raises(DataError, match="file.bin: checksum mismatch .*the file was removed"):
        fetch(archive(url, digest=wrong), tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="10,240 bytes where 10,000 were expected"):
        fetch(archive(url, size=10_000), tmp_path)
    assert list(tmp_path.iterdir()) == []


def _replace(monkeypatch: pytest.MonkeyPatch, name: str, source: Source) -> None:
    """The declared datasets, with ``name`` fetched from ``source`` instead."""
    table = {**datasets.sources(), name: source}
    monkeypatch.setattr(datasets, "sources", lambda: table)


def _offline(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    source = Source((Archive("aclImdb_v1.tar.gz", url, "md5:00", 10),), "aclImdb", "test")
    _replace(monkeypatch, "imdb", source)


def test_offline_is_a_one_line_error_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline(monkeypatch, "http://no-such-host.invalid/aclImdb_v1.tar.gz")
    assert main(["data", "download", "imdb", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: cannot reach no-such-host.invalid")
    assert len(err.strip().splitlines()) == 1
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _offline(monkeypatch, f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz")
    assert main(["data", "download", "imdb", "--cache", str(tmp_path)]) == 2
    assert "refused" in capsys.readouterr().err.lower()
    assert list(tmp_path.iterdir()) == []
    cache = tmp_path / "new"
    assert main(["data", "download", "imdb", "--cache", str(cache)]) == 2
    assert not cache.exists()  # nothing written when nothing was fetched


def test_download_unpacks_once(
    server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, state = server
    make_imdb(tmp_path / "src")
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
    state.files["/aclImdb_v1.tar.gz"] = packed.getvalue()
    digest = "md5:" + hashlib.md5(packed.getvalue()).hexdigest()
    size = len(packed.getvalue())
    source = Source(
        (Archive("aclImdb_v1.tar.gz", f"{url}/aclImdb_v1.tar.gz", digest, size),), "aclImdb", ""
    )
    _replace(monkeypatch, "imdb", source)
    cache = tmp_path / "cache"
    for _ in range(2):
        assert main(["data", "download", "imdb", "--cache", str(cache)]) == 0
        assert capsys.readouterr().out == f"{cache / 'aclImdb'}\n"
    assert state.requests == [None]
    assert (cache / ".aclImdb_v1.tar.gz.unpacked").exists()
    assert main(["data", "prepare", "imdb", "--from", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "train: 2 positive, 2 negative",
        "test: 1 positive, 1 negative",
    ]


def test_the_built_in_sources() -> None:
    assert list(datasets.sources()) == ["voc", "imdb", "bert-vocab", "squad"]
    for source in datasets.sources().values():
        for a in source.archives:
            algorithm, _, digest = a.digest.partition(":")
            assert len(digest) == hashlib.new(algorithm).digest_size * 2 and a.size > 0
    assert datasets.VOC_TRAIN_SPLITS == __import__("data.voc").voc.DEFAULT_SPLITS
    assert datasets.DEFAULT_CACHE.parts[-3:] == ("results", "cache", "data")


#: A made-up workload that reads a made-up dataset; the test that serves it sets the Source.
TOY_INFO = WorkloadInfo(
    name="toy", flops=lambda spec: (None, "unknown"), datasets={"toy-text": f"{__name__}:TOY"}
)
TOY = Source((), "toy", "")
#: A made-up workload that names IMDB with a Source of its own.
CLASHING_INFO = WorkloadInfo(
    name="toy", flops=lambda spec: (None, "unknown"), datasets={"imdb": f"{__name__}:TOY"}
)


def _register_toy(monkeypatch: pytest.MonkeyPatch, info: str = "TOY_INFO") -> None:
    monkeypatch.setitem(
        registry.REGISTRY, ("toy", "torch"), registry.Entry("models.null:NullWorkload")
    )
    monkeypatch.setitem(registry.WORKLOAD_INFO, "toy", f"{__name__}:{info}")


def test_a_dataset_declared_only_by_a_new_workload_is_offered_and_fetched(
    server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workload that only the registry and its WorkloadInfo know brings its dataset to
    ``bench data download``: its choices, its help and the download itself."""
    url, state = server
    toy = Source((archive(url, name="toy/file.bin", unpack=False),), "toy", "a toy corpus")
    monkeypatch.setattr(f"{__name__}.TOY", toy)
    with pytest.raises(SystemExit) as refused:
        main(["data", "download", "toy-text"])
    assert refused.value.code == 2
    assert "invalid choice: 'toy-text'" in capsys.readouterr().err

    _register_toy(monkeypatch)
    assert list(datasets.sources()) == ["voc", "imdb", "bert-vocab", "squad", "toy-text"]
    assert datasets.sources()["toy-text"] == toy
    with pytest.raises(SystemExit) as shown:
        main(["data", "download", "--help"])
    assert shown.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{bert-vocab,imdb,squad,toy-text,voc}" in help_text
    assert "squad: SQuAD v1.1 train and dev questions (35 MB). toy-text: a toy corpus." in (
        help_text
    )
    cache = tmp_path / "cache"
    assert main(["data", "download", "toy-text", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out == f"{cache / 'toy'}\n"
    assert (cache / "toy" / "file.bin").read_bytes() == CONTENT
    assert state.requests == [None]


def test_one_dataset_name_is_one_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workloads that read the same dataset name the same Source (bert and bert-qa share
    bert-vocab); a name declared with two Sources is refused."""
    bert, bert_qa = registry.workload_info("bert"), registry.workload_info("bert-qa")
    assert bert.datasets["bert-vocab"] == bert_qa.datasets["bert-vocab"]
    _register_toy(monkeypatch, "CLASHING_INFO")
    with pytest.raises(TypeError, match="dataset 'imdb' is declared as data.imdb:SOURCE and"):
        datasets.sources()


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, list[str], str]:
    code = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_prepare_voc_and_describe_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devkit = make_voc(tmp_path)
    rec = tmp_path / "out" / "train.rec"
    code, out, _ = run(capsys, "prepare", "voc", "--from", tmp_path, "--out", rec)
    assert code == 0
    assert out == [
        f"{rec}: 5 images (2007/trainval+2012/trainval), index train.idx",
        "label layout: A=4 B=6, normalised corners",
    ]
    assert sorted(p.name for p in rec.parent.iterdir()) == ["train.idx", "train.rec"]
    assert len(DetectionRecordFile(rec)) == 5

    code, out, _ = run(capsys, "info", rec)
    assert code == 0
    assert out[:6] == [
        f"{rec}: MXNet RecordIO, detection labels",
        "images: 5",
        "label layout: A=4 B=6 (5)",
        "objects: 8 (1 difficult)",
        "classes: 8",
        "  aeroplane: 1 objects",
    ]
    code, out, _ = run(capsys, "info", devkit)
    assert out[:6] == [
        f"{devkit}: Pascal VOC (VOCdevkit layout)",
        "VOC2007: 4 images",
        "  test: 1 images",
        "  trainval: 3 images",
        "VOC2012: 2 images",
        "  trainval: 2 images",
    ]
    assert "  bird: 2 objects" in out and "classes: 9" in out

    small = tmp_path / "small.rec"
    args = ("--splits", "2007/test", "--header-width", 2, "--object-width", 5)
    assert run(capsys, "prepare", "voc", "--from", devkit, "--out", small, *args)[0] == 0
    out = run(capsys, "info", small)[1]
    assert out[2:4] == ["label layout: A=2 B=5 (1)", "objects: 2 (0 difficult)"]


def test_info_on_text_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acl = make_imdb(tmp_path)
    assert run(capsys, "info", tmp_path)[1] == [
        f"{acl}: IMDB reviews (aclImdb layout)",
        "train: 2 positive, 2 negative",
        "test: 1 positive, 1 negative",
    ]
    vocab = write_vocab(tmp_path / "vocab.txt")
    assert run(capsys, "info", vocab)[1] == [
        f"{vocab}: WordPiece vocabulary",
        "tokens: 31",
        "special tokens: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["prepare", "voc", "--from", "{tmp}"], "prepare voc needs --out FILE.rec"),
        (["prepare", "voc", "--from", "{tmp}", "--out", "{tmp}/x.rec"], "no VOCdevkit layout"),
        (["prepare", "imdb", "--from", "{tmp}"], "no aclImdb layout"),
        (["info", "{tmp}"], "not a dataset this tool knows"),
        (["info", "{tmp}/missing"], "no such file or folder"),
    ],
)
def test_bad_paths_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *(a.format(tmp=tmp_path) for a in args))
    assert code == 2 and out == []
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_failed_pack_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devkit = make_voc(tmp_path)
    (devkit / "VOC2012" / "JPEGImages" / "2008_000008.jpg").unlink()
    out = tmp_path / "out"
    code, lines, err = run(capsys, "prepare", "voc", "--from", devkit, "--out", out / "t.rec")
    assert code == 2 and lines == [] and "2008_000008.jpg" in err
    assert list(out.iterdir()) == []
