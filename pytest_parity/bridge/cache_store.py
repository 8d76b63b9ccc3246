"""Where the conversion cache's entries live: a local directory, or any fsspec URL (s3://, gs://, memory://, ...).

Both stores offer the same four operations (read, create-only write, remove, clear) on opaque, already framed entries;
``bridge/cache.py`` frames and verifies them, so a store never has to be trusted with the content.

Why create-only: several sessions (xdist workers, CI shards on other machines) convert the same model at once and write
the same key. An entry, once there, is never overwritten, and no writer ever exposes a half-written one under its final
name, so a reader sees either nothing or a complete entry, which it verifies anyway (sha256 in the frame).

- Local directory: the entry is written to a temporary file in the same directory and hard-linked to its final name
  (``os.link`` fails if the name exists: create-only and atomic, no locks, which network filesystems get wrong). A
  filesystem without hard links falls back to ``os.replace`` after an existence check: atomic, and the rare race
  between two writers of one key replaces a complete entry with another complete one.
- S3 (s3fs): one conditional PUT with ``If-None-Match: *``; the server refuses the second writer (412).
- Any other fsspec filesystem, and an S3-compatible server that answers 501 to conditional writes: the entry is
  written under a unique temporary key, then moved to its final key only if that is absent. Two writers racing past
  the check both move a complete entry (an object store's copy is atomic); a partial copy on a filesystem where it is
  not atomic fails the reader's checksum and is rebuilt. Nothing here can make a reader accept a wrong entry.

fsspec and its backends are imported on first use only, inside these classes: a session that keeps its cache in a
local directory never loads them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

ENTRY_SUFFIX = ".onnx-entry"
TEMPORARY_SUFFIX = ".tmp"
# fsspec protocols whose implementation ships in an extra of this package: the fix a missing backend's message names.
EXTRA_FOR_PROTOCOL = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
# Object stores, where a URL's first path component is a bucket that must exist before anything can be written.
BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}


class StoreUnavailable(Exception):
    """The store cannot be used this session; the message names the cause and the fix."""


class EntryStore(Protocol):
    location: str  # what messages name: the directory or the URL as the user wrote it

    def check(self) -> None:
        """Raise StoreUnavailable if the store cannot be used at all (called once, before the first operation)."""

    def read(self, name: str) -> bytes | None:
        """The entry's bytes; None if there is no such entry. Any other failure raises."""

    def create(self, name: str, data: bytes) -> bool:
        """Write a new entry; False (and nothing written) if an entry of that name exists already."""

    def remove(self, name: str) -> None:
        """Remove an entry if it is there."""

    def holds_entries(self) -> bool:
        """Whether the store holds at least one entry."""

    def clear(self) -> None:
        """Remove every entry and leftover temporary file; nothing else in the directory or prefix is touched."""


def is_url(location: str) -> bool:
    return "://" in location


def location_problem(text: str) -> str | None:
    """Why ``text`` is not a valid --parity-cache value, or None: on, off, a path that looks like one, or a URL.

    A bare word ("of", "maybe") is refused rather than taken as a directory name: it is far more often a mistyped mode
    than a directory, and a typo would otherwise create a directory and cache there silently. ``./word`` names one.
    """
    if text in ("on", "off") or is_url(text):
        return None
    if os.sep in text or "/" in text or text.startswith((".", "~")) or os.path.isabs(text):
        return None
    return (f"invalid choice: {text!r} (on, off, a directory such as ./{text}, or an fsspec URL such as "
            f"s3://bucket/prefix)")


def open_store(location: str, base: Path) -> EntryStore:
    """The store for a --parity-cache value other than on/off; a relative path is taken from ``base``."""
    if location.startswith("file://"):
        location = location[len("file://"):]
    if is_url(location):
        return FsspecStore(location)
    return DirectoryStore(base / Path(location).expanduser())


def check_protocol(url: str) -> None:
    """Raise ValueError naming the known protocols if fsspec does not know the URL's protocol (a typo such as s4://).

    Imports fsspec: call it only for a URL. A known protocol whose backend is not installed passes here; the store says
    so, as a warning, when it is first used.
    """
    protocol = url.split("://", 1)[0]
    try:
        import fsspec
    except ImportError:
        return  # the store's first use reports it, with the extra to install
    if protocol not in fsspec.available_protocols():
        raise ValueError(f"--parity-cache: unknown URL protocol {protocol!r} in {url!r} (fsspec knows s3, gs, az, "
                         f"http, memory and {len(fsspec.available_protocols()) - 5} more). Fix the URL (for example "
                         f"s3://bucket/prefix), or give a directory path.")


def install_hint(protocol: str, package: str | None = None) -> str:
    extra = EXTRA_FOR_PROTOCOL.get(protocol)
    if extra:
        return f"pip install pytest-parity[{extra}]"
    return f"pip install {package}" if package else "pip install fsspec and the fsspec backend for this protocol"


class DirectoryStore:
    """Entries as files in one local (or mounted network) directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.location = str(directory)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}{ENTRY_SUFFIX}"

    def check(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreUnavailable(f"{self.directory} is not a directory. Give a directory path, or remove the file")

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            # A directory where an entry goes is not ours to remove: that one model goes uncached.
            return None

    def create(self, name: str, data: bytes) -> bool:
        final = self._path(name)
        if final.exists():
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{name[:16]}-", suffix=TEMPORARY_SUFFIX)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            try:
                os.link(temporary, final)
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                # No hard links here (some SMB/FAT mounts): rename, atomic too; see the module docstring for the race.
                if final.exists():
                    return False
                os.replace(temporary, final)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def remove(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self._path(name).unlink()

    def holds_entries(self) -> bool:
        try:
            with os.scandir(self.directory) as entries:
                return any(entry.name.endswith(ENTRY_SUFFIX) for entry in entries)
        except OSError:
            return False

    def clear(self) -> None:
        for path in self._own_files():
            with contextlib.suppress(OSError):
                path.unlink()

    def _own_files(self) -> Iterator[Path]:
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name.endswith(ENTRY_SUFFIX) or (path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)):
                yield path


class FsspecStore:
    """Entries as objects (or files) under an fsspec URL. Options such as an S3-compatible endpoint come from the
    backend's own configuration: environment (AWS_ENDPOINT_URL_S3, AWS_PROFILE, FSSPEC_S3_ENDPOINT_URL, ...) or an
    fsspec config file, as for any other fsspec user."""

    def __init__(self, url: str) -> None:
        self.location = url
        self.protocol = url.split("://", 1)[0]
        self._filesystem: Any = None
        self._root = ""
        # S3 conditional writes, until the server shows it does not support them (501).
        self._conditional_put = False

    def _fs(self) -> Any:
        if self._filesystem is None:
            try:
                # Import-time notices of the backend (a deprecation in aiobotocore, ...) are not the user's business
                # and must not become errors under -W error.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    import fsspec

                    filesystem, root = fsspec.core.url_to_fs(self.location)
            except ImportError as error:
                package = getattr(error, "name", None) or _package_named_in(str(error))
                raise StoreUnavailable(f"the {self.protocol}:// backend of fsspec is not installed ({error}). Install "
                                       f"it: {install_hint(self.protocol, package)}") from None
            self._filesystem, self._root = filesystem, root.rstrip("/")
            self._conditional_put = _supports_conditional_put(filesystem)
        return self._filesystem

    def _key(self, name: str) -> str:
        return f"{self._root}/{name}{ENTRY_SUFFIX}"

    def check(self) -> None:
        filesystem = self._fs()
        if self.protocol not in BUCKET_PROTOCOLS:
            return
        bucket = self._root.split("/", 1)[0]
        try:
            with _quiet():
                filesystem.info(bucket)
        except FileNotFoundError:
            raise StoreUnavailable(f"the bucket {bucket!r} does not exist (or these credentials cannot see it). "
                                   f"Create it, or fix the bucket in the URL") from None

    def read(self, name: str) -> bytes | None:
        filesystem = self._fs()
        try:
            with _quiet():
                data: bytes = filesystem.cat_file(self._key(name))
            return data
        except FileNotFoundError:
            return None

    def create(self, name: str, data: bytes) -> bool:
        filesystem, final = self._fs(), self._key(name)
        if self._conditional_put:
            try:
                with _quiet():
                    filesystem.pipe_file(final, data, mode="create")
                return True
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno != errno.ENOSYS:  # 501 NotImplemented: a server without conditional writes
                    raise
                self._conditional_put = False
        with _quiet():
            filesystem.invalidate_cache(final)
            if filesystem.exists(final):
                return False
            temporary = f"{self._root}/.{name[:16]}-{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
            filesystem.pipe_file(temporary, data)
            try:
                filesystem.invalidate_cache(final)
                if filesystem.exists(final):
                    return False
                filesystem.mv(temporary, final)
                return True
            finally:
                with contextlib.suppress(Exception):
                    if filesystem.exists(temporary):
                        filesystem.rm_file(temporary)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError), _quiet():
            self._fs().rm_file(self._key(name))

    def holds_entries(self) -> bool:
        return any(name.endswith(ENTRY_SUFFIX) for name in self._listing())

    def clear(self) -> None:
        own = [name for name in self._listing() if name.endswith(ENTRY_SUFFIX)
               or (name.rsplit("/", 1)[-1].startswith(".") and name.endswith(TEMPORARY_SUFFIX))]
        if own:
            with _quiet():
                self._fs().rm(own)

    def _listing(self) -> list[str]:
        """Every name directly under the prefix, fresh from the server (s3fs keeps listings it has seen)."""
        filesystem = self._fs()
        try:
            with _quiet():
                filesystem.invalidate_cache(self._root)
                return [str(name) for name in filesystem.ls(self._root, detail=False)]
        except FileNotFoundError:
            return []


def _supports_conditional_put(filesystem: Any) -> bool:
    """Only s3fs turns pipe_file(mode="create") into one conditional PUT; fsspec's generic mode="create" is an
    existence check followed by a plain write, no better than the fallback."""
    import inspect

    if type(filesystem).__module__.split(".")[0] != "s3fs":
        return False
    return "mode" in inspect.signature(type(filesystem)._pipe_file).parameters


def _package_named_in(message: str) -> str | None:
    # fsspec's registry says e.g. "Install s3fs to access S3".
    words = message.split()
    return words[1] if len(words) > 1 and words[0] == "Install" else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The backends' own warnings (deprecations in botocore, ...) during a check are not the user's: under -W error
    # they would turn a cache operation into a failure the user cannot act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
