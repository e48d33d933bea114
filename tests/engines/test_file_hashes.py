"""The hash cache: a file's sha256 is read once per version of the file (counted reads), in any
number of processes; a changed file — even one given its old mtime back, as ``cp -p`` does — is
hashed again; the cache file is found through $WAN_DESKTOP_CACHE, written atomically, and a corrupt
one is ignored and rewritten."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from wan_desktop.engines import file_hashes
from wan_desktop.engines.file_hashes import HashCache


@pytest.fixture
def reads(monkeypatch):
    """The files whose bytes were hashed, in order (the real hasher runs)."""
    seen = []
    real = file_hashes.sha256_file

    def counting(path):
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(file_hashes, "sha256_file", counting)
    return seen


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_each_file_is_hashed_once_across_processes(tmp_path, reads):
    cache_file = tmp_path / "cache" / "file-hashes.json"
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"weights a" * 1000)
    b.write_bytes(b"weights b" * 1000)
    first = HashCache(cache_file)
    assert first.sha256(a) == _sha(a.read_bytes())
    assert first.sha256(b) == _sha(b.read_bytes())
    assert first.sha256(a) == _sha(a.read_bytes())
    # a second process (a new instance reads the file) and another spelling of the same path
    second = HashCache(cache_file)
    assert second.sha256(tmp_path / "cache" / ".." / "a.safetensors") == _sha(a.read_bytes())
    assert second.cached(b) == _sha(b.read_bytes())
    assert reads == ["a.safetensors", "b.safetensors"]
    stored = json.loads(cache_file.read_text())
    assert stored["format"] == file_hashes.FORMAT and set(stored["files"]) == {
        str(a.resolve()),
        str(b.resolve()),
    }
    assert not [p for p in cache_file.parent.iterdir() if p.name != cache_file.name]  # no .tmp


def test_a_changed_file_is_hashed_again_even_with_its_old_mtime(tmp_path, reads):
    cache = HashCache(tmp_path / "h.json")
    f = tmp_path / "dit.safetensors"
    f.write_bytes(b"model A " * 512)
    st = f.stat()
    assert cache.sha256(f) == _sha(b"model A " * 512)
    time.sleep(0.05)  # file times advance in clock ticks (1-10 ms): the rewrite is a later one
    # another model's file of the same size copied over it with its times kept (cp -p, rsync -t)
    f.write_bytes(b"model B " * 512)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert HashCache(tmp_path / "h.json").cached(f) is None
    assert HashCache(tmp_path / "h.json").sha256(f) == _sha(b"model B " * 512)
    # a replaced file (new inode) and a resized one
    tmp = tmp_path / "new"
    tmp.write_bytes(b"model C " * 512)
    os.replace(tmp, f)
    assert cache.sha256(f) == _sha(b"model C " * 512)
    f.write_bytes(b"short")
    assert cache.sha256(f) == _sha(b"short")
    assert reads == ["dit.safetensors"] * 4


def test_cached_never_reads_a_file(tmp_path, reads):
    cache = HashCache(tmp_path / "h.json")
    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    assert cache.cached(f) is None
    assert cache.cached(tmp_path / "missing.bin") is None
    assert reads == []
    cache.sha256(f)
    assert cache.cached(f) == _sha(b"x") and reads == ["x.bin"]


def test_the_cache_lives_in_the_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_DESKTOP_CACHE", str(tmp_path / "wd"))
    assert HashCache().path == tmp_path / "wd" / "file-hashes.json"
    monkeypatch.delenv("WAN_DESKTOP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(file_hashes.sys, "platform", "linux")
    assert HashCache().path == tmp_path / "xdg" / "wan-desktop" / "file-hashes.json"
    monkeypatch.setattr(file_hashes.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert HashCache().path == tmp_path / "local" / "wan-desktop" / "cache" / "file-hashes.json"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        "\xff\xfe",
        json.dumps({"format": "other", "version": 1, "files": {}}),
        json.dumps({"format": file_hashes.FORMAT, "version": 1, "files": []}),
    ],
)
def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, reads, content):
    path = tmp_path / "h.json"
    path.write_text(content, encoding="latin-1")
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert HashCache(path).sha256(f) == _sha(b"abc")
    assert HashCache(path).sha256(f) == _sha(b"abc")
    assert reads == ["x.bin"]
    assert json.loads(path.read_text())["format"] == file_hashes.FORMAT


def test_wrong_or_forged_records_are_not_trusted(tmp_path, reads):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    st = f.resolve().stat()
    stamp = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
    }
    other = tmp_path / "y.bin"
    other.write_bytes(b"y")
    path = tmp_path / "h.json"
    path.write_text(
        json.dumps(
            {
                "format": file_hashes.FORMAT,
                "version": 1,
                "files": {
                    str(f.resolve()): stamp | {"sha256": "not a hash"},
                    str(other.resolve()): {"size": "1", "sha256": "ab" * 32},
                },
            }
        )
    )
    assert HashCache(path).cached(f) is None and HashCache(path).cached(other) is None
    assert HashCache(path).sha256(f) == _sha(b"abc") and reads == ["x.bin"]


def test_an_unwritable_cache_costs_only_hashing_again(tmp_path, reads, caplog):
    (tmp_path / "file").write_text("a regular file where the cache dir should be")
    cache = HashCache(tmp_path / "file" / "sub" / "h.json")
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert cache.sha256(f) == _sha(b"abc")
    assert "not written" in caplog.text
    assert cache.sha256(f) == _sha(b"abc")  # kept in memory for this process
    assert reads == ["x.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "x.bin"]
