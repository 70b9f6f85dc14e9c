import math

import numpy as np
import pytest

from crn_deploy.measure.parity import compare_images, psnr
from crn_deploy.records import Parity
from crn_deploy.runtime.timing import measure_latency, percentile, summarize


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
    assert parity.max_abs == 3 and parity.mean_abs == pytest.approx(0.01)
    assert parity.frac_off_gt2 == pytest.approx(1 / 300)
    assert parity.psnr_db == pytest.approx(10 * math.log10(255**2 / (9 / 300)))
    assert compare_images(reference, reference).psnr_db is None
    assert psnr(255.0**2) == pytest.approx(0.0)


def test_gates():
    parity = Parity(max_abs=2.0, mean_abs=0.1, psnr_db=45.0, ssim=0.99, frac_off_gt2=0.0)
    assert parity.passes(max_abs=2, min_psnr=40)
    assert not parity.passes(max_abs=1)
    assert not parity.passes(min_psnr=50)
    identical = Parity(max_abs=0.0, mean_abs=0.0, psnr_db=None, ssim=1.0, frac_off_gt2=0.0)
    assert identical.passes(min_psnr=50)  # identical pictures pass any PSNR gate
    assert Parity.from_dict(parity.to_dict()) == parity


def test_ssim_known_values():
    from crn_deploy.measure.parity import ssim

    a = np.full((32, 32), 100.0)
    b = np.full((32, 32), 120.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))  # constant pictures
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (64, 64, 3))
    assert ssim(noise, noise) == pytest.approx(1.0)
    assert ssim(noise, 255 - noise) < 0  # anti-correlated structure
    slightly = np.clip(noise + rng.normal(0, 2, noise.shape), 0, 255)
    assert 0.9 < ssim(noise, slightly) < 1.0
    assert ssim(noise, slightly) == pytest.approx(ssim(slightly, noise))


def test_per_class_errors_land_on_their_class():
    from crn_deploy.measure.parity import per_class

    labels = np.zeros((1, 1, 4, 4), np.uint8)
    labels[0, 0, :2] = 13  # top half "car"
    labels[0, 0, 3, 3] = 255  # one void pixel
    reference = np.zeros((1, 4, 4, 3), np.uint8)
    candidate = reference.copy()
    candidate[0, 0, 0] = 6  # one car pixel off by 6 in every channel
    result = per_class(candidate, reference, labels, ("road",) * 13 + ("car",))
    assert set(result) == {"road", "car", "void"}
    assert result["car"]["pixels"] == 8 and result["car"]["max_abs"] == 6
    assert result["car"]["mean_abs"] == pytest.approx(6 / 8)
    assert result["road"]["psnr_db"] is None and result["void"]["pixels"] == 1


def test_nonfinite_values_fail_any_gate():
    candidate = np.zeros((1, 8, 8, 3), np.float32)
    candidate[0, 0, 0, 0] = np.nan
    parity = compare_images(candidate, np.zeros((1, 8, 8, 3), np.uint8))
    assert parity.nonfinite == 1 and not parity.passes()


def test_trtexec_bound_warnings():
    from crn_deploy.measure.report import bound_warnings

    def split(enqueue, compute, copy):
        return {"breakdown_ms": {"enqueue": {"p50": enqueue}, "compute": {"p50": compute},
                                 "h2d": {"p50": copy}, "d2h": {"p50": copy}}}

    assert bound_warnings(split(0.1, 5.0, 0.5)) == []
    assert "enqueue-bound" in bound_warnings(split(4.5, 5.0, 0.5))[0]
    assert "transfer-bound" in bound_warnings(split(0.1, 1.0, 1.2))[0]
    assert bound_warnings({"latency_ms": {}}) == []
