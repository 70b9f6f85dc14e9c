"""What every command shares: the project's errors become one line on stderr and an exit code;
SIGINT and SIGTERM end it at once (exit 130 / 143), its temporary files removed.

Long calls into C (an ONNX Runtime or PyTorch forward pass, writing a large ONNX) do not return to
Python for seconds, and Python only handles signals between its own instructions in the main
thread. So a command's work runs in a worker thread while the main thread waits for signals: an
interrupt is acted on within a fraction of a second, whatever the worker is doing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable

from ..errors import CrnError, Terminated, UsageError
from ..files import abandon_temporaries, abandoned, unlink_temporaries_for_exit

EXIT_SIGINT, EXIT_SIGTERM = 130, 143
# OpenCV logs its own warnings (a PNG cut short...) to the terminal on its first message; the commands say what
# went wrong in their own words instead.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def run_command(prog: str, body: Callable[[], int], *, handles_interrupts: bool = False) -> int:
    """Run ``body``; ``handles_interrupts``: it runs in the main thread and turns Ctrl-C/SIGTERM
    (a KeyboardInterrupt) into a clean ending of its own (crn-run finalises its video)."""
    previous = _install_handlers(prog)
    try:
        if handles_interrupts:
            return _one_line_errors(prog, body)
        return _in_worker(prog, body)
    except KeyboardInterrupt as interrupt:
        _end_now(prog, interrupt)
    finally:
        _restore_handlers(previous)


def interrupt_exit_code(interrupt: BaseException | None = None) -> int:
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) else EXIT_SIGINT


def _one_line_errors(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except CrnError as e:
        if not abandoned():  # after an interrupt, what the abandoned work trips over is not news
            print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code


def _in_worker(prog: str, body: Callable[[], int]) -> int:
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["code"] = _one_line_errors(prog, body)
        except BaseException as error:  # re-raised in the main thread: a bug keeps its traceback
            outcome["error"] = error

    worker = threading.Thread(target=work, name=f"{prog}-work", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)  # short joins: the main thread stays free to take signals
    if "error" in outcome:
        raise outcome["error"]
    return outcome["code"]


def _end_now(prog: str, interrupt: BaseException) -> None:
    """Remove our temporary files, say so in one line, and exit without waiting for the work."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    removed = abandon_temporaries()
    what = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
    tidy = f"; removed {removed} temporary file(s)" if removed else ""
    print(f"{prog}: interrupted ({what}){tidy}; nothing half-written was left", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    unlink_temporaries_for_exit()
    os._exit(interrupt_exit_code(interrupt))


def _install_handlers(prog: str):
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum, frame):
        raise Terminated()

    previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), warnings.showwarning)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    warnings.showwarning = lambda message, *rest: print(f"{prog}: warning: {message}", file=sys.stderr)
    return previous


def _restore_handlers(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        warnings.showwarning = previous[2]


def require(prog: str, modules: tuple[str, ...] = ("torch", "onnx"), extra: str = "export",
            why: str = "") -> None:
    """One line and exit 2 where a command needs a package this environment lacks (a deployment box
    installed with only the ``ort`` extra has no torch)."""
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise UsageError(f"{prog}{why} needs {' and '.join(missing)}, which this environment lacks: "
                         f"pip install 'crn-deploy[{extra}]'")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def parse_or_exit(parser: argparse.ArgumentParser, argv: list[str] | None, convert: Callable | None = None):
    """argparse, plus our own value checks reported the argparse way (usage line, exit 2)."""
    args = parser.parse_args(argv)
    if convert is not None:
        try:
            convert(args)
        except CrnError as e:
            parser.error(str(e))
    return args


def log(message: str) -> None:
    if not abandoned():
        print(message, flush=True)
