"""One lifecycle for every backend: cheap constructor, open -> run -> close, context manager."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, CrnError, UsageError
from ..files import check_file_matches


class Backend:
    """Subclasses implement ``_open_impl``, ``_run_impl`` and ``_close_impl``; the public methods stay here."""

    name = "backend"
    device = "cpu"
    pipelined = False  # True where submit() returns before the frame is done (frames overlap)

    def __init__(self) -> None:
        self.is_open = False

    def open(self) -> Backend:
        if not self.is_open:
            self._open_impl()
            self.is_open = True
        return self

    def run(self, ids: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        """ids: uint8 [B,1,H,W] of the artifact's exact shape; ``extra``: the artifact's further inputs
        in its manifest's order (int32 instance ids [B,1,H,W] for pix2pixHD). Hot path: no validation."""
        if not self.is_open:
            raise CrnError(f"{self.name} is not open; call open() or use it as a context manager")
        return self._run_impl(ids, *extra)

    def submit(self, ids: np.ndarray, *extra: np.ndarray):
        """Queue a batch and return a handle whose ``result()`` gives the output. Backends that
        overlap frames (TensorRT) return at once; the others run it now."""
        return Finished(self.run(ids, *extra))

    def submit_device(self, labels, *extra, output: str = "host"):
        """Run label maps that live in device memory (CuPy, CUDA torch tensors); backends that can read
        them in place override this."""
        raise UsageError(f"the {self.name} backend takes label maps in host memory only: pass NumPy arrays, or "
                         "load the artifact with a GPU backend (a TensorRT engine, ONNX Runtime on cuda)")

    def device_memory_bytes(self) -> int | None:
        """GPU memory this backend holds (peak where known); None on a CPU or where unknown."""
        return None

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self._close_impl()

    def __enter__(self) -> Backend:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_impl(self) -> None:
        raise NotImplementedError

    def _run_impl(self, ids: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


def recorded_engine(manifest, target, version: str, rebuild: str, rebuild_same: str | None = None):
    """The manifest's ``target`` engine record, if this library version runs it (an engine runs only on the
    version that built it); else a refusal naming the command that builds one (``rebuild_same``: the one that
    builds this engine again, where it differs)."""
    record = manifest.engine_record(target)
    if record is None:
        raise ArtifactError(f"{manifest.path} records no {target.runtime} engine; build one with: {rebuild}")
    if record.runtime_version != version:
        raise ArtifactError(
            f"{record.file} was built by {target.runtime} {record.runtime_version} and this is {target.runtime} "
            f"{version} (an engine runs only on the version that built it); rebuild it here with: "
            f"{rebuild_same or rebuild}")
    return record


def read_engine(path, record, build: str, rebuild: str) -> bytes:
    """An engine file's bytes, refused where it is missing (``build`` makes it) or not the file its record names
    (``rebuild`` makes it again)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path} not found; build it with: {build}") from None
    check_file_matches(path, record.size_bytes, record.sha256, f"rebuild it with: {rebuild}", data=data)
    return data


class Finished:
    """The handle of a frame that has already run."""

    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def result(self) -> np.ndarray:
        return self._value
