"""A free TCP port on loopback for a server a test starts as a process of its own, which binds it seconds later.

A port bound with bind(0) and let go comes from the ephemeral range, where Ray's processes (GCS, raylets,
agents) bind theirs while that server starts: one of them may take it first. Ray's workers take 10002-19999. So
the port is drawn from the gap between the two, where only what asks for a port by number binds."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKERS_LAST = 19999


def free_port() -> int:
    first, last = RAY_WORKERS_LAST + 1, _ephemeral_first() - 1
    draw = random.SystemRandom()  # not the shared generator a test may have seeded: each worker draws its own
    for port in draw.sample(range(first, last + 1), min(200, max(0, last - first + 1))):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # no gap on this machine: take what it gives
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ephemeral_first() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
