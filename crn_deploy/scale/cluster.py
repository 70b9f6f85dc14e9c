"""Ray as the commands use it: connected once, quiet in the user's terminal, a local instance kept on loopback, and
shut down by the thread that started it.

- A local instance (no address) is one machine's: Ray's own single-machine switch (the one it uses on macOS and
  Windows) makes every Ray process of it listen on 127.0.0.1 only, not on every interface.
- Ray's own logging and warnings (Ray Data's progress, token-auth notices) stay in Ray's session logs, and the C++
  core worker's lines and the cluster's error messages (a lost node's raylet log, retried tasks) in a file of their
  own; the commands say what matters in their own words (a lost node: one line).
- A cluster that will not take the driver (no such address, nothing listening, token authentication on the
  cluster's side only, another Ray or Python version) is refused in one line that names the address and the fix
  (exit code 2), as soon as it is known and no later than Ray itself gives up.
- ``ray.shutdown()`` from another thread than the one that called ``ray.init`` waits about 15 s for the driver's
  core worker (measured on Ray 2.60); a command that started Ray shuts it down where it started it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import socket
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
def quiet_ray(library: str) -> Iterator[Path]:
    """Keep Ray's own output out of a command's terminal for the block (from before Ray starts): its Python
    logging and warnings, and those of the Ray ``library`` the command uses ("ray.data", "ray.serve"), are
    silenced (Ray keeps its session logs), and what the C++ core worker in this process writes to the standard
    error goes to a file (yielded; kept and named where the block fails with something other than one of the
    project's errors or an interrupt) while Python's own ``sys.stderr`` stays on the terminal. The logging levels
    and warning filters stay set for the rest of the process: a command's process."""
    warnings.filterwarnings("ignore", module="ray")
    with contextlib.suppress(ImportError):  # it sets its loggers' levels when imported; only it (each costs ~0.5 s)
        importlib.import_module(library)
    for name in ("ray", library):
        logging.getLogger(name).setLevel(logging.ERROR)
    native_log = Path(tempfile.gettempdir()) / f"crn-deploy-ray-{os.getpid()}.log"
    try:
        with _native_stderr_to(native_log), _cluster_errors_to_native_log():
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
def _cluster_errors_to_native_log() -> Iterator[None]:
    """The cluster's error messages that Ray's driver prints as they come (a raylet's last log lines when a node
    dies, each retried task...) go where the C++ core's lines go: the commands say what they mean in a line."""
    worker = sys.modules.get("ray._private.worker")
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:  # another Ray: its messages stay where it prints them
        yield
        return

    def to_native_log(data: dict, ignore_prefix: bool = False) -> None:
        with contextlib.suppress(OSError):
            os.write(2, "".join(f"{line}\n" for line in data.get("lines", [])).encode(errors="replace"))

    worker.print_to_stdstream = to_native_log
    try:
        yield
    finally:
        worker.print_to_stdstream = printer


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
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'crn-deploy[ray]'") from None
    return ray


def _init(ray, address: str | None, log: Callable[[str], None]) -> None:
    if address not in (None, "auto") and "://" not in address:
        check_reachable(address)
    # ray.init sets a SIGTERM handler that exits at once (code 15): keep the caller's, which shuts down
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    said = Path(tempfile.gettempdir()) / f"crn-deploy-ray-init-{os.getpid()}.log"
    try:
        # "local": a new instance even where another Ray runs on this machine (ray.init without an address would
        # join the one named by RAY_ADDRESS or the last one `ray start` or any other process started here)
        with _native_stderr_to(said):  # what Ray's C++ client says while it connects tells why it could not
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
        raise UsageError(refusal(address, e, _read_and_pass_on(said))) from None
    else:
        _read_and_pass_on(said)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    resources = ray.cluster_resources()
    log(f"Ray {ray.__version__}: {'local instance' if address is None else address}, "
        f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """Refuse at once an address that names no host and port, a host that does not resolve, or a port nothing
    listens on (Ray itself retries those for minutes)."""
    host, _, port = _as_ray_connects(address).rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(_bad_format(address))
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except socket.gaierror as e:
        raise UsageError(f"--ray {address}: cannot resolve the host {host} ({e.strerror}): check the name, or give "
                         "the head node's IP address") from None
    except ConnectionRefusedError:
        raise UsageError(f"--ray {address}: nothing listens there: start the cluster's head on that port (ray start "
                         f"--head --port {port}), or give the address `ray start --head` printed") from None
    except OSError as e:  # a timeout, no route
        raise UsageError(f"--ray {address}: no answer ({e.strerror or 'timed out'} after {CONNECT_TIMEOUT_S:g} s): "
                         "check the address, and that a firewall lets this machine reach that port") from None


def _as_ray_connects(address: str) -> str:
    """The host:port Ray connects to for ``address`` (it takes localhost for this node's address)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) or address
    except ValueError:
        raise UsageError(_bad_format(address)) from None
    except Exception:  # noqa: BLE001 - another Ray's internals: check the address as given
        return address


def refusal(address: str | None, error: BaseException, native: str) -> str:
    """One line for a cluster that would not take this driver: what happened, at which address, and the fix."""
    where = f"--ray {address or '(local)'}"
    text = str(error)
    if "Invalid address format" in text:
        return _bad_format(address)
    if "Could not find any running Ray instance" in text:
        return (f"{where}: no Ray cluster was started on this machine: start one (ray start --head), or give --ray "
                "HOST:PORT of its head node")
    if "multiple active Ray instances" in text:
        return f"{where}: several Ray clusters run on this machine: give --ray HOST:PORT of the head of one"
    if "InvalidAuthToken" in native or "Unauthenticated" in native:
        return (f"{where}: the cluster requires token authentication and refused this driver's token (none, or "
                "another): give this driver the cluster's token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token or "
                "RAY_AUTH_TOKEN_PATH; `ray get-auth-token` on the head prints it)")
    if "authentication token was found" in text:
        return (f"{where}: token authentication is on here (RAY_AUTH_MODE=token) but this driver has no token: give "
                "it the cluster's (RAY_AUTH_TOKEN, or ~/.ray/auth_token), or unset RAY_AUTH_MODE if the cluster "
                "has none")
    versions = re.findall(r"Ray: (\S+)\s+Python: (\S+)", text)
    if "Version mismatch" in text and len(versions) == 2:
        (ray_there, python_there), (ray_here, python_here) = versions
        return (f"{where}: the cluster runs Ray {ray_there} on Python {python_there}, this driver Ray {ray_here} on "
                f"Python {python_here}: run it where both match (pip install 'ray[data]=={ray_there}' on Python "
                f"{python_there}), or from a node of the cluster")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return (f"{where}: no Ray cluster took this driver ({first}): check that the address is the head node's "
            "(ray status there), and that its Ray version matches this one's")


def _bad_format(address: str | None) -> str:
    return (f"--ray {address}: not the address of a Ray cluster: give HOST:PORT of its head node (the port "
            "`ray start --head` printed, 6379 by default), or auto for the one started on this machine")


def _read_and_pass_on(path: Path) -> str:
    """The text a block's native output went to, passed on to the standard error as it is now (Ray's file
    under ``quiet_ray``), the file removed."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    path.unlink(missing_ok=True)
    if data:
        with contextlib.suppress(OSError):
            os.write(2, data)
    return data.decode(errors="replace")
