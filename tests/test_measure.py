import math

import numpy as np
import pytest

from crn_deploy.measure.parity import compare_images, passes, psnr
from crn_deploy.measure.timing import measure_latency, percentile, summarize


def test_percentiles_follow_trtexec():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50 and percentile(values, 90) == 90 and percentile(values, 99) == 99
    assert percentile([5.0], 99) == 5.0
    stats = summarize([4.0, 1.0, 3.0, 2.0])
    assert (stats.min, stats.max, stats.p50, stats.mean) == (1.0, 4.0, 2.5, 2.5)
    assert stats.std == pytest.approx(math.sqrt(1.25))


def test_measure_latency_warms_up_then_runs_enough_iterations():
    clock_now = [0.0]
    calls = []

    def fn():
        calls.append(clock_now[0])
        clock_now[0] += 1 / 64  # each call takes 15.625 ms of fake time (exact in binary)

    stats = measure_latency(fn, warmup_s=4 / 64, iterations=3, duration_s=10 / 64, frames_per_call=2,
                            clock=lambda: clock_now[0])
    assert stats.count == 10  # the duration outlasts 3 iterations
    assert len(calls) == 4 + 10  # 4 calls of warm-up
    assert stats.p50 == pytest.approx(15.625) and stats.fps == pytest.approx(128.0)


def test_psnr_and_errors_on_known_values():
    reference = np.zeros((10, 10, 3), np.uint8)
    candidate = reference.copy()
    candidate[0, 0, 0] = 3  # one value off by 3 of 300
    parity = compare_images(candidate, reference)
    assert parity["max_abs"] == 3 and parity["mean_abs"] == pytest.approx(0.01)
    assert parity["frac_off_gt2"] == pytest.approx(1 / 300)
    assert parity["psnr_db"] == pytest.approx(10 * math.log10(255**2 / (9 / 300)))
    assert compare_images(reference, reference)["psnr_db"] is None
    assert psnr(255.0**2) == pytest.approx(0.0)


def test_gates():
    parity = {"max_abs": 2.0, "psnr_db": 45.0}
    assert passes(parity, max_abs=2, min_psnr=40)
    assert not passes(parity, max_abs=1)
    assert not passes(parity, min_psnr=50)
    assert passes({"max_abs": 0.0, "psnr_db": None}, min_psnr=50)  # identical pictures pass any PSNR gate
