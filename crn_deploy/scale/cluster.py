"""Ray as the commands use it: connected once, quiet in the user's terminal, a local instance kept on loopback, and
shut down by the thread that started it.

- A local instance (no address) is one machine's: Ray's own single-machine switch (the one it uses on macOS and
  Windows) makes every Ray process of it listen on 127.0.0.1 only, not on every interface.
- Ray's own logging and warnings (Ray Data's progress, token-auth notices) stay in Ray's session logs, and the C++
  core worker's lines in a file of their own; the commands say what matters in their own words.
- ``ray.shutdown()`` from another thread than the one that called ``ray.init`` waits about 15 s for the driver's
  core worker (measured on Ray 2.60); a command that started Ray shuts it down where it started it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CrnError, UsageError

# Ray reads it at import: with it off, a local instance's node address is the loopback address, which its GCS,
# raylet, workers and agents then listen on.
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def quiet_ray() -> Iterator[Path]:
    """Keep Ray's own output out of a command's terminal for the block (from before Ray starts): its Python
    logging and warnings are silenced (Ray keeps its session logs), and what the C++ core worker in this process
    writes to the standard error goes to a file (yielded; kept and named where the block fails unexpectedly) while
    Python's own ``sys.stderr`` stays on the terminal. The logging levels and warning filters stay set for the rest
    of the process: a command's process."""
    warnings.filterwarnings("ignore", module="ray")
    for module in ("ray.data", "ray.serve"):  # each sets its loggers' levels when imported
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    for name in ("ray", "ray.data", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)
    native_log = Path(tempfile.gettempdir()) / f"crn-deploy-ray-{os.getpid()}.log"
    try:
        with _native_stderr_to(native_log):
            yield native_log
    except (CrnError, KeyboardInterrupt):  # said in the command's own words
        native_log.unlink(missing_ok=True)
        raise
    except BaseException:
        if native_log.is_file() and native_log.stat().st_size:  # kept: it may say why
            print(f"Ray's own messages of this run: {native_log}", file=sys.stderr)
        raise
    native_log.unlink(missing_ok=True)


@contextlib.contextmanager
def _native_stderr_to(path: Path) -> Iterator[None]:
    try:
        python_stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): nothing of Python's is on fd 2
        python_stderr_fd = None
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 2)
    python_stderr = sys.stderr
    if python_stderr_fd == 2:
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=python_stderr.encoding,
                               errors="backslashreplace")
    try:
        yield
    finally:
        if sys.stderr is not python_stderr:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)


@contextlib.contextmanager
def connected(address: str | None, log: Callable[[str], None] = print) -> Iterator:
    """Ray, initialised for the block: a local instance (``address`` None), or an existing cluster ("auto",
    host:port). Where the block started Ray, it ends it, from the same thread; one already running is left be."""
    ray = _import_ray(address)
    started = not ray.is_initialized()
    if started:
        _init(ray, address, log)
    try:
        yield ray
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def connect(address: str | None, log: Callable[[str], None] = print):
    """Ray, initialised for the rest of the process (see ``connected``; nothing shuts it down here)."""
    ray = _import_ray(address)
    if not ray.is_initialized():
        _init(ray, address, log)
    return ray


def _import_ray(address: str | None):
    if address is None:
        os.environ[SINGLE_MACHINE] = "0"
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # Ray was imported before: its constant is read when the node starts
            constants.ENABLE_RAY_CLUSTER = False
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'crn-deploy[ray]'") from None
    return ray


def _init(ray, address: str | None, log: Callable[[str], None]) -> None:
    # ray.init sets a SIGTERM handler that exits at once (code 15): keep the caller's, which shuts down
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    # "local": a new instance even where another Ray runs on this machine (ray.init without an address would join
    # the one named by RAY_ADDRESS or the last one `ray start` or any other process started here)
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    ray.data.DataContext.get_current().enable_progress_bars = False
    resources = ray.cluster_resources()
    log(f"Ray {ray.__version__}: {'local instance' if address is None else address}, "
        f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
