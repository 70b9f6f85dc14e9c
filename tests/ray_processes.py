"""What a test sees of Ray's processes from outside: the actors this process's Ray runs, their titles, and the
sockets a command's processes listen on (through /proc and psutil: Ray's state API needs the dashboard, which the
``ray`` extra does not install)."""

import contextlib
from pathlib import Path

import pytest


def actor_pids(name_part: str) -> set[int]:
    """Live Ray worker processes of this process's Ray (its descendants: another test process may run a Ray of its
    own) running an actor of this class: Ray titles them ``ray::<Class>...`` (the state API would need the
    dashboard, which the ``ray`` extra does not install)."""
    import psutil

    found, ours = set(), {p.pid for p in psutil.Process().children(recursive=True)}
    for proc in (Path("/proc") / str(pid) for pid in ours):
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except (OSError, IndexError):
            continue
        if title.startswith("ray::") and name_part in title.split()[0] and state not in ("Z", "X"):
            found.add(int(proc.name))
    return found


def ray_titles(processes) -> set[str]:
    """What Ray's workers among ``processes`` run now (``ray::<title>``; its agents left out)."""
    psutil = pytest.importorskip("psutil")
    titles = set()
    for process in processes:
        with contextlib.suppress(psutil.Error, IndexError):
            title = process.cmdline()[0]
            if title.startswith("ray::") and not title.split()[0].endswith("Agent"):
                titles.add(title.removeprefix("ray::").split()[0])
    return titles


def alive(process) -> bool:
    """Running and not a zombie; False also for a process that ends while it is asked."""
    psutil = pytest.importorskip("psutil")
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ProcessLookupError):
        return False


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every socket the process and its descendants listen on."""
    psutil = pytest.importorskip("psutil")
    found = []
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            found += [(process.name(), c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
