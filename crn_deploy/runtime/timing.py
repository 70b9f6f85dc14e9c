"""Latency the way trtexec reports it: warm-up by time, then at least N iterations and D seconds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds; ``fps`` counts frames (calls x batch) over the timed wall time."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    fps: float

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_ms: list[float], p: float) -> float:
    """trtexec's rule: drop the worst int((1 - p/100) * N) values, take the largest left."""
    n = len(sorted_ms)
    exclude = int(round((100 - p) * n / 100, 9))  # (1 - 0.9) * 100 is 9.999... in binary floating point
    return sorted_ms[max(n - 1 - exclude, 0)]


def median(sorted_ms: list[float]) -> float:
    n = len(sorted_ms)
    mid = n // 2
    return sorted_ms[mid] if n % 2 else (sorted_ms[mid - 1] + sorted_ms[mid]) / 2


def summarize(samples_ms: list[float], frames_per_call: int = 1, wall_s: float | None = None) -> LatencyStats:
    if not samples_ms:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in ordered) / n)
    wall = wall_s if wall_s is not None else sum(ordered) / 1000
    return LatencyStats(n, mean, std, ordered[0], ordered[-1], median(ordered), percentile(ordered, 90),
                        percentile(ordered, 95), percentile(ordered, 99), n * frames_per_call / wall)


def measure_latency(
    fn: Callable[[], object],
    *,
    warmup_s: float = 1.0,
    iterations: int = 10,
    duration_s: float = 3.0,
    frames_per_call: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyStats:
    """Call ``fn`` at least once and for ``warmup_s``, then time at least ``iterations`` calls and ``duration_s``."""
    start = clock()
    fn()
    while clock() - start < warmup_s:
        fn()
    samples = []
    begin = clock()
    while len(samples) < iterations or clock() - begin < duration_s:
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000)
    return summarize(samples, frames_per_call, clock() - begin)
