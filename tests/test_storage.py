"""distkeras.storage: atomic writes and clear read errors on any fsspec URL."""

from __future__ import annotations

import os
import threading

import pytest

from distkeras import storage
from distkeras.storage import StorageError, open_atomic, read_bytes, write_bytes_atomic


def test_local_round_trip_makes_folders_and_leaves_no_temporary_file(tmp_path):
    url = write_bytes_atomic(tmp_path / "a" / "b" / "f.bin", b"hello")
    assert url == str(tmp_path / "a" / "b" / "f.bin")
    assert read_bytes(url) == b"hello"
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]
    write_bytes_atomic("file://" + url, b"again")  # file: URLs are local paths
    assert read_bytes(url) == b"again"
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]


def test_local_write_goes_to_a_temporary_file_in_the_same_folder_then_a_rename(tmp_path, monkeypatch):
    """The new bytes never appear under the target's name before they are complete: they are
    written to a sibling (same folder, so the same filesystem) and renamed over the target."""
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((str(src), str(dst)))
        assert target.read_bytes() == b"old"  # until the rename, readers see the old file
        assert open(src, "rb").read() == b"new" * 1000  # complete before it is renamed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with open_atomic(target) as f:
        f.write(b"new" * 500)
        assert target.read_bytes() == b"old"  # half-written: not visible
        f.write(b"new" * 500)
    [(src, dst)] = renames
    assert os.path.dirname(src) == str(tmp_path) and dst == str(target) and src != dst
    assert target.read_bytes() == b"new" * 1000
    assert os.listdir(tmp_path) == ["f.bin"]


def test_local_reader_never_sees_a_torn_file(tmp_path):
    target = tmp_path / "f.bin"
    a, b = b"a" * 300_000, b"b" * 300_000
    write_bytes_atomic(target, a)
    stop, seen = threading.Event(), set()

    def reader():
        while not stop.is_set():
            seen.add(read_bytes(target))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(40):
            write_bytes_atomic(target, b if i % 2 == 0 else a)
    finally:
        stop.set()
        t.join()
    assert seen <= {a, b} and seen


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(StorageError, match=r"cannot write file to '.*f\.bin': OSError: disk full") as info:
        with open_atomic(target) as f:
            f.write(b"half")
            raise OSError("disk full")
    assert info.value.url == str(target)
    with pytest.raises(KeyError):  # the caller's own errors pass through unchanged
        with open_atomic(target) as f:
            f.write(b"half")
            raise KeyError("mine")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_overwrite_false_and_a_directory_in_the_way(tmp_path):
    write_bytes_atomic(tmp_path / "f.bin", b"x")
    with pytest.raises(StorageError, match="the file exists") as info:
        write_bytes_atomic(tmp_path / "f.bin", b"y", overwrite=False)
    assert info.value.kind == storage.EXISTS
    (tmp_path / "d").mkdir()
    with pytest.raises(StorageError, match="is a directory"):
        write_bytes_atomic(tmp_path / "d", b"y")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(StorageError, match="not a folder"):
        write_bytes_atomic(tmp_path / "plain" / "sub" / "f.bin", b"y")


def test_memory_round_trip_and_no_temporary_key_left(tmp_path):
    import fsspec

    url = f"memory://distkeras-storage-tests/{tmp_path.name}/f.bin"
    assert write_bytes_atomic(url, b"one") == url
    assert read_bytes(url) == b"one"
    with open_atomic(url) as f:
        f.write(b"two")
    assert read_bytes(url) == b"two"
    with pytest.raises(StorageError):
        with open_atomic(url) as f:
            f.write(b"torn")
            raise OSError("network down")
    assert read_bytes(url) == b"two"
    fs = fsspec.filesystem("memory")
    assert [p.rsplit("/", 1)[1] for p in fs.ls(f"/distkeras-storage-tests/{tmp_path.name}", detail=False)] == ["f.bin"]


@pytest.mark.parametrize("where", ["local", "memory"])
def test_missing_file_error_names_the_url_and_the_cause(where, tmp_path):
    url = str(tmp_path / "nope.bin") if where == "local" else f"memory://distkeras-storage-tests/{tmp_path.name}/nope.bin"
    with pytest.raises(StorageError) as info:
        read_bytes(url, what="spec")
    e = info.value
    assert str(e) == f"cannot read spec from {url!r}: no such file or directory"
    assert e.kind == storage.MISSING and e.url == url
    assert isinstance(e, OSError)
    with pytest.raises(StorageError, match="is a directory") as info:
        read_bytes(tmp_path)
    assert info.value.kind == storage.DIRECTORY


def test_unknown_protocol_and_missing_package():
    with pytest.raises(StorageError, match=r"cannot open file location 'nosuchproto://x/f\.bin': unknown protocol") as info:
        read_bytes("nosuchproto://x/f.bin")
    assert info.value.kind == storage.PROTOCOL
    with pytest.raises(StorageError, match="unknown protocol"):
        write_bytes_atomic("nosuchproto://x/f.bin", b"x")


def test_missing_optional_package(monkeypatch):
    import fsspec.core

    def url_to_fs(url, **kw):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", url_to_fs)
    with pytest.raises(StorageError, match=r"'s3://bucket/f\.bin': a package the protocol needs is missing: Install s3fs") as info:
        read_bytes("s3a://bucket/f.bin")  # Hadoop's spelling is mapped to s3://
    assert info.value.kind == storage.PACKAGE


def test_callers_keep_their_error_types(tmp_path):
    from distkeras.ps.checkpoint import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError) as info:
        load_checkpoint("nosuchproto://x")
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, StorageError)
    assert info.value.kind == storage.PROTOCOL
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        load_checkpoint(str(tmp_path))
    assert info.value.kind == storage.MISSING


def test_normalize_url(tmp_path):
    assert storage.normalize_url("s3a://b/k") == "s3://b/k"
    assert storage.normalize_url("file:///tmp/x") == "/tmp/x"
    assert storage.normalize_url("rel/x") == os.path.abspath("rel/x")
    with pytest.raises(StorageError, match="not local"):
        storage.normalize_url("file://otherhost/x")
    with pytest.raises(StorageError, match="invalid URL"):
        storage.normalize_url("")
