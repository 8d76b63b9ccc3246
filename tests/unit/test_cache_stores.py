"""The conversion cache's stores on their own (bridge/cache_store.py): create-only writes in a local directory and
under an fsspec URL (fsspec's in-memory filesystem, which takes the generic temporary-key path), clearing only what is
the cache's, the --parity-cache values that are refused, and a failing store that warns once and fails nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pytest_parity.bridge import cache_store
from pytest_parity.bridge.cache import HIT, MISS, REBUILT, ConversionCache, frame
from pytest_parity.bridge.cache_store import DirectoryStore, FsspecStore, StoreUnavailable

KEY = "ab" * 32


def test_a_directory_store_writes_create_only_and_leaves_no_temporary_file(tmp_path):
    store = DirectoryStore(tmp_path / "entries")
    assert store.read(KEY) is None and not store.holds_entries()
    assert store.create(KEY, b"first") is True
    assert store.create(KEY, b"second") is False  # never overwritten
    assert store.read(KEY) == b"first" and store.holds_entries()
    assert [p.name for p in (tmp_path / "entries").iterdir()] == [f"{KEY}.onnx-entry"]


def test_clearing_a_directory_removes_only_the_cache_s_own_files(tmp_path):
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / ".abababababababab-x.tmp").write_bytes(b"left by a killed writer")
    store = DirectoryStore(tmp_path)
    store.create(KEY, b"entry")
    store.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.fixture
def memory_url():
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://parity-{uuid.uuid4().hex}/cache"
    yield url
    fsspec.filesystem("memory").rm(url.split("://")[1].split("/")[0], recursive=True)


def test_an_fsspec_store_writes_create_only_through_a_temporary_key(memory_url):
    store = FsspecStore(memory_url)
    store.check()
    assert store.read(KEY) is None and not store.holds_entries()
    assert store.create(KEY, b"first") is True
    assert store.create(KEY, b"second") is False
    assert store.read(KEY) == b"first" and store.holds_entries()
    filesystem = store._fs()
    assert [name.rsplit("/", 1)[-1] for name in filesystem.ls(memory_url, detail=False)] == [f"{KEY}.onnx-entry"]
    filesystem.pipe_file(f"{memory_url}/readme.txt", b"the user's")
    store.clear()
    assert [name.rsplit("/", 1)[-1] for name in filesystem.ls(memory_url, detail=False)] == ["readme.txt"]


def test_the_cache_over_an_fsspec_store_verifies_what_it_reads(memory_url):
    cache = ConversionCache(FsspecStore(memory_url))
    assert cache.load(KEY) == (None, MISS)
    cache.store(KEY, b"model bytes")
    assert cache.load(KEY) == (b"model bytes", HIT)
    cache.backend._fs().pipe_file(f"{memory_url}/{KEY}.onnx-entry", frame(b"model bytes")[:-3])  # truncated
    assert cache.load(KEY) == (None, REBUILT)
    cache.store(KEY, b"rebuilt")
    assert cache.load(KEY) == (b"rebuilt", HIT)


def test_read_only_reads_verified_entries_and_never_writes_or_removes(memory_url):
    ConversionCache(FsspecStore(memory_url)).store(KEY, b"written by a trusted job")
    warnings: list[str] = []
    readonly = ConversionCache(FsspecStore(memory_url), on_warning=warnings.append, readonly=True)
    assert readonly.load(KEY) == (b"written by a trusted job", HIT)
    readonly.store("cd" * 32, b"from an untrusted job")
    assert readonly.load("cd" * 32) == (None, MISS)
    readonly.backend._fs().pipe_file(f"{memory_url}/{KEY}.onnx-entry", b"damaged")
    assert readonly.load(KEY) == (None, REBUILT)
    assert readonly.backend.read(KEY) == b"damaged"  # left for a trusted job to replace
    assert warnings == []  # the cache is not empty: misses are normal


def test_read_only_over_an_empty_cache_warns_once_naming_the_fix(tmp_path):
    warnings: list[str] = []
    cache = ConversionCache(tmp_path / "empty", on_warning=warnings.append, readonly=True)
    assert cache.load(KEY) == (None, MISS)
    assert cache.load("cd" * 32) == (None, MISS)
    assert len(warnings) == 1
    assert str(tmp_path / "empty") in warnings[0] and "without --parity-cache-readonly" in warnings[0]
    assert not (tmp_path / "empty").exists()


class FailingStore(DirectoryStore):
    def read(self, name: str) -> bytes | None:
        raise ConnectionError("connection reset by peer")


def test_a_store_that_fails_to_read_turns_the_cache_off_with_one_warning(tmp_path):
    warnings: list[str] = []
    cache = ConversionCache(FailingStore(tmp_path), on_warning=warnings.append)
    assert cache.load(KEY) == (None, MISS)
    cache.store(KEY, b"not written: the cache is off")
    assert cache.load(KEY) == (None, MISS)
    assert not list(tmp_path.iterdir())
    assert len(warnings) == 1
    assert str(tmp_path) in warnings[0] and "ConnectionError: connection reset by peer" in warnings[0]


def test_a_store_that_cannot_be_used_says_why_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    warnings: list[str] = []
    cache = ConversionCache(DirectoryStore(blocker), on_warning=warnings.append)
    assert cache.load(KEY) == (None, MISS)
    cache.store(KEY, b"x")
    assert len(warnings) == 1 and "is not a directory" in warnings[0] and "--parity-cache=off" in warnings[0]


@pytest.mark.parametrize(("value", "ok"), [("on", True), ("off", True), ("./maybe", True), ("/abs/dir", True),
                                           ("dir/sub", True), ("~/cache", True), ("s3://bucket/prefix", True),
                                           ("maybe", False), ("of", False)])
def test_a_bare_word_is_refused_as_a_likely_typo_of_a_mode(value, ok):
    problem = cache_store.location_problem(value)
    assert (problem is None) == ok
    if not ok:
        assert f"invalid choice: {value!r}" in problem and f"./{value}" in problem


def test_an_unknown_url_protocol_is_refused_naming_the_fix():
    pytest.importorskip("fsspec")
    with pytest.raises(ValueError, match=r"unknown URL protocol 's4'.*Fix the URL"):
        cache_store.check_protocol("s4://bucket/prefix")
    cache_store.check_protocol("s3://bucket/prefix")  # known, whether or not s3fs is installed


def test_a_missing_backend_names_the_extra_to_install():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(StoreUnavailable, match=r"pip install pytest-parity\[gcs\]"):
        FsspecStore("gs://bucket/prefix").check()


def test_a_relative_directory_is_taken_from_the_base(tmp_path):
    store = cache_store.open_store("./shared", tmp_path)
    assert isinstance(store, DirectoryStore) and store.directory == tmp_path / "shared"
    assert isinstance(cache_store.open_store(f"file://{tmp_path}", Path("/elsewhere")), DirectoryStore)
