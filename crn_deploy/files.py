"""Writing files so that nothing is ever left half-written, and hashing them.

Every file is written under a temporary name beside its final one and renamed into place only
once complete. It is durable too: the file's data is synced to disk before the rename, and its folder
after it, so that after a power loss the final name holds the whole file or its previous content, never
an empty or truncated one (``CRN_DEPLOY_FSYNC=0`` leaves that to the operating system, for scratch disks).

Temporary names are hidden, hold ``.tmp`` (never ending in an artifact's suffix) and carry
the writer's process id and host, so that a temporary left by a killed process (SIGKILL, power loss) is
recognised and removed by the next run on that host that writes into that folder — and never one of
another machine's, which may still be writing it (a folder shared by the nodes of a cluster). The temporaries of a live
process are registered here, so that a command ended by a signal removes them before it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ArtifactError, UsageError

_TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.crn(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9._-]+))?-[0-9a-f]{8}"
                        r"\.tmp(?:\.[A-Za-z0-9]+)?$")
_live_temporaries: set[Path] = set()
_swept_folders: set[Path] = set()
_lock = threading.Lock()
_abandoned = threading.Event()  # a signal is ending the process: nothing may be renamed into place now
FSYNC_SWITCH = "CRN_DEPLOY_FSYNC"


def host_name() -> str:
    """This machine's name as temporaries carry it (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def temporary_name(final: Path, suffix: str = "") -> Path:
    """A fresh hidden name beside ``final``: ``.<name>.crn<pid>@<host>-<random>.tmp[<suffix>]``.

    ``suffix`` is for writers that pick a format by extension (OpenCV's video writer)."""
    final = Path(final)
    return final.with_name(f".{final.name}.crn{os.getpid()}@{host_name()}-{os.urandom(4).hex()}.tmp{suffix}")


@contextlib.contextmanager
def temporary_file(final: Path, suffix: str = "") -> Iterator[Path]:
    """A registered temporary path beside ``final``, removed on the way out unless renamed away."""
    tmp = register_temporary(temporary_name(final, suffix))
    try:
        yield tmp
    finally:
        release_temporary(tmp)
        tmp.unlink(missing_ok=True)


def register_temporary(path: Path) -> Path:
    """Mark ``path`` as this process's temporary: removed if a signal ends the process."""
    with _lock:
        _live_temporaries.add(Path(path))
    return Path(path)


def release_temporary(path: Path) -> None:
    with _lock:
        _live_temporaries.discard(Path(path))


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds (the file
    synced before, its folder after).

    The file gets the mode a plain ``open()`` would give it under the current umask (0644 under 022),
    not ``mkstemp``'s 0600: a service account must be able to read what a build account wrote."""
    final = Path(final)
    ensure_writable_dir(final.parent)
    with temporary_file(final) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        os.close(fd)
        yield tmp
        sync_file(tmp)
        _publish(tmp, final)
    sync_folder(final.parent)


def write_files_atomic(files: list[tuple[Path, bytes]], may_publish: Callable[[], bool] = lambda: True) -> bool:
    """Write each file whole and durably under a temporary name, then, if ``may_publish()`` allows it, rename
    them all into place and sync their folders once; otherwise remove them. Returns whether they were published.
    (Many small files: one folder sync for all of them rather than one each.)"""
    folders = {Path(path).parent for path, _ in files}
    for folder in folders:
        ensure_writable_dir(folder)
    with contextlib.ExitStack() as stack:
        temporaries = [stack.enter_context(temporary_file(Path(path))) for path, _ in files]
        for tmp, (_, data) in zip(temporaries, files, strict=True):
            write_synced(tmp, data)
        if not may_publish():
            return False
        for tmp, (path, _) in zip(temporaries, files, strict=True):
            _publish(tmp, Path(path))
    for folder in folders:
        sync_folder(folder)
    return True


def _publish(tmp: Path, final: Path) -> None:
    if _abandoned.is_set():  # the process is exiting on a signal: never publish a file after that
        threading.Event().wait()
    os.replace(tmp, final)


def write_synced(path: Path, data: bytes) -> None:
    """A new file holding ``data``, on disk when this returns (mode as for ``open()`` under the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
        if durable():
            os.fsync(fd)
    finally:
        os.close(fd)


def durable() -> bool:
    """Whether writes are synced to disk (the default; ``CRN_DEPLOY_FSYNC=0`` turns it off)."""
    return os.environ.get(FSYNC_SWITCH, "1") != "0"


def sync_file(path: Path) -> None:
    """The file's data on disk before a name points at it."""
    if durable():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sync_folder(folder: Path) -> None:
    """The folder's entries (a rename into it) on disk. Filesystems that cannot sync a folder are left be."""
    if not durable():
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # EINVAL: a filesystem without directory sync
        pass
    finally:
        os.close(fd)


def abandoned() -> bool:
    """True once a signal is ending the process (work still running in other threads should be quiet)."""
    return _abandoned.is_set()


def abandon_temporaries() -> int:
    """A signal is ending the process: publish nothing more and remove its temporary files.
    Returns how many there were. Call ``unlink_temporaries_for_exit`` right before ``os._exit``."""
    _abandoned.set()
    with _lock:
        paths = list(_live_temporaries)
    _unlink_all(paths, os.unlink)
    time.sleep(0.05)  # lets a writer that was about to (re)create its file by path do so now
    _unlink_all(paths, os.unlink)
    return len(paths)


def unlink_temporaries_for_exit() -> None:
    """The last pass, made while holding the GIL (``ctypes.PyDLL`` calls do not release it): no
    thread of ours can create a file between it and the ``os._exit`` that follows."""
    libc = ctypes.PyDLL(None)
    with _lock:
        paths = list(_live_temporaries)
    _unlink_all(paths, lambda path: libc.unlink(os.fsencode(path)))


def _unlink_all(paths: list[Path], unlink) -> None:
    for path in paths:
        try:
            unlink(path)
        except OSError:
            pass


def sweep_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporaries in ``folder`` written on this host by a process that is gone; report each on stderr.
    Another host's temporaries are left alone: their writer may be alive there. (Names without a host come
    from versions before hosts were named: taken as this host's.)"""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    here = host_name()
    for path in entries:
        match = _TEMP_NAME.match(path.name)
        if match is None or match.group("host") not in (None, here) or _process_alive(int(match.group("pid"))):
            continue
        try:
            path.unlink()
        except OSError as e:
            print(f"crn-deploy: cannot remove {path}, a temporary file left by a killed run: {e.strerror}",
                  file=sys.stderr)
            continue
        removed.append(path)
        print(f"crn-deploy: removed {path}, a temporary file left by a run that was killed", file=sys.stderr)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_files_atomic([(Path(path), data)])


def write_json_atomic(path: Path, data: dict) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def ensure_writable_dir(folder: Path) -> list[Path]:
    """Create ``folder`` if needed and check it is writable; the first time a process writes there,
    remove temporaries that killed runs left behind. Returns the folders it created, deepest first (for
    ``remove_empty_folders`` when nothing was written)."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {folder}: {e.strerror}; choose another output folder") from None
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} is a file; choose another output folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable; choose another output folder")
    key = folder.resolve()
    with _lock:
        first = key not in _swept_folders
        _swept_folders.add(key)
    if first:
        sweep_stale_temporaries(folder)
    return created


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are still empty: a run that wrote nothing leaves no trace."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone: leave it
            return


_digests: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> SHA-256, this process


def check_file_matches(path: Path, size_bytes: int, sha256: str | None, fix: str, data: bytes | None = None) -> None:
    """Refuse ``path`` (in one line ending in ``fix``) unless it has the size and SHA-256 its manifest
    recorded. The size is checked every time; the digest is taken from ``data`` where the caller read the
    file whole anyway, else once per file per process (cached by size and modification time)."""
    stat = path.stat()
    if stat.st_size != size_bytes:
        raise ArtifactError(f"{path} is {stat.st_size} bytes, its manifest says {size_bytes}: truncated or changed "
                            f"since export; {fix}")
    if not sha256:
        return
    if file_digest(path, data) != sha256:
        raise ArtifactError(f"{path} does not have the SHA-256 its manifest records: changed since export; {fix}")


def file_digest(path: Path, data: bytes | None = None) -> str:
    """The file's SHA-256 (from ``data``, its content, where the caller has read it whole), taken once per
    process while its size and modification time stay the same."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if data is not None:
        _digests[key] = hashlib.sha256(data).hexdigest()
    elif key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
