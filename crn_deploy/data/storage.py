"""Where label maps are read from and pictures written to: a local folder, or a prefix in object storage
(``s3://``, ``gs://``, ``abfs://`` — whatever pyarrow's filesystems open), through pyarrow's filesystems.
Endpoint and credentials come from the standard environment, as every tool of that ecosystem reads them
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` for S3 and
S3-compatible stores; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS).

Writes are all or nothing per picture: a local file is written under a temporary name, synced and renamed (see
``files``); an object is one upload, which the store makes visible only when it completes (and durable then).
A local folder used by a cluster must be shared by every node (NFS, a cluster filesystem): the Ray path checks it.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import UnreadableInput, UsageError
from ..files import write_files_atomic

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_uri(location: str | Path) -> bool:
    return bool(_URI.match(str(location)))


class Store:
    """A folder or object-store prefix; names below it are ``/``-separated relative paths."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location).rstrip("/") or "/"
        self.remote = is_uri(self.location)
        if self.remote:
            self.fs, self.root = _filesystem(self.location)
        else:
            self.fs, self.root = None, str(Path(self.location))

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    def __reduce__(self):  # Ray ships stores to its workers: each reopens its filesystem from the location
        return (Store, (self.location,))

    def uri(self, name: str) -> str:
        return f"{self.location}/{name}"

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read(self, name: str) -> bytes:
        try:
            if not self.remote:
                return Path(self._path(name)).read_bytes()
            with self.fs.open_input_stream(self._path(name)) as stream:
                return stream.read()
        except (OSError, FileNotFoundError) as e:
            raise UnreadableInput(f"cannot read {self.uri(name)}: {e}") from None

    def write(self, name: str, data: bytes) -> None:
        """All or nothing: a local temporary synced and renamed into place, or one object upload."""
        self.write_all([(name, data)])

    def write_all(self, items: list[tuple[str, bytes]], may_publish: Callable[[], bool] = lambda: True) -> bool:
        """Write each (name, bytes) whole; none is published unless ``may_publish()``, asked once every file is
        ready to be (local temporaries written and synced; objects before their uploads). Returns whether they
        were."""
        if not self.remote:
            return write_files_atomic([(Path(self._path(name)), data) for name, data in items], may_publish)
        if not may_publish():
            return False
        for name, data in items:
            try:
                with self.fs.open_output_stream(self._path(name)) as stream:
                    stream.write(data)
            except OSError as e:
                raise UsageError(f"cannot write {self.uri(name)}: {e}") from None
        return True

    def files(self, recursive: bool = True) -> list[str]:
        """Every file below the location (or, not ``recursive``, directly in it): relative names, sorted; none where
        it does not exist."""
        return sorted(self.listing(recursive))

    def listing(self, recursive: bool = True) -> dict[str, tuple[int, float]]:
        """Every file below the location (or, not ``recursive``, directly in it): {relative name: (bytes,
        modification time in seconds since the epoch)}; none where it does not exist. (A local file removed while
        listed is left out.)"""
        if not self.remote:
            root = Path(self.root)
            found = {}
            for path in (root.rglob("*") if recursive else root.iterdir()) if root.is_dir() else ():
                try:
                    stat = path.stat()
                except OSError:
                    continue
                if path.is_file():
                    found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns / 1e9)
            return found
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=recursive, allow_not_found=True))
        except OSError as e:
            raise UsageError(f"cannot list {self.location}: {e}") from None
        prefix = self.root + "/"
        return {i.path[len(prefix):]: (i.size, i.mtime.timestamp() if i.mtime else 0.0) for i in infos
                if i.type == pafs.FileType.File and i.path.startswith(prefix)}

    def is_file(self) -> bool:
        """Whether the location itself is one file (not a folder or prefix)."""
        if not self.remote:
            return Path(self.root).is_file()
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self.root).type == pafs.FileType.File
        except OSError as e:
            raise UsageError(f"cannot look at {self.location}: {e}") from None

    def check_writable(self) -> None:
        """Refuse early (before minutes of work) where nothing can be written. (In object storage, pyarrow keeps
        the prefix as a zero-byte folder marker ``prefix/`` once the probe is removed, as S3 consoles do.)"""
        probe = ".crn-deploy-write-check"
        self.write(probe, b"")
        self.delete(probe)

    def delete(self, name: str) -> None:
        if not self.remote:
            Path(self._path(name)).unlink(missing_ok=True)
        else:
            try:
                self.fs.delete_file(self._path(name))
            except FileNotFoundError:
                pass


def split_pattern(pattern: str) -> tuple[Store, str]:
    """Where a pattern's files are, and the glob that picks them there, as every tool of the object-store
    ecosystem names them: a glob ``s3://b/gtFine/**/*_labelIds.png`` -> (the store at its leading folders
    without a wildcard, ``s3://b/gtFine``, and ``**/*_labelIds.png``); a folder or prefix (``data``, ``data/``,
    ``s3://b/in``, ``s3://b/in/``) -> (its store, ``*``: the files directly in it); one file -> (its folder's
    store, its name)."""
    pattern = str(pattern)
    if not glob.has_magic(pattern):
        store = Store(pattern)
        if store.is_file():
            folder, _, name = store.location.rpartition("/")
            return Store(folder or "."), name
        return store, "*"
    pattern = pattern.rstrip("/")
    scheme, _, rest = pattern.rpartition("://")
    parts = rest.split("/")
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    root = "/".join(parts[:fixed]) or "."
    return Store(f"{scheme}://{root}" if scheme else root), "/".join(parts[fixed:])


def matching(names: list[str], pattern: str) -> list[str]:
    """The names a glob pattern (``*``, ``?``, ``[...]`` within a folder name; ``**`` any number of folders,
    none included) matches, in order."""
    parts = pattern.split("/")
    return [n for n in names if _matches(n.split("/"), parts)]


def _matches(folders: list[str], parts: list[str]) -> bool:
    """Whether a name's parts match a pattern's, one part at a time (``**`` takes zero or more of them)."""
    if not parts:
        return not folders
    if parts[0] == "**":
        return any(_matches(folders[skip:], parts[1:]) for skip in range(len(folders) + 1))
    return bool(folders) and fnmatch.fnmatchcase(folders[0], parts[0]) and _matches(folders[1:], parts[1:])


def _filesystem(uri: str):
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise UsageError(f"{uri}: object storage needs pyarrow (pip install 'crn-deploy[storage]')") from None
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UsageError(f"cannot open {uri}: {e}") from None
