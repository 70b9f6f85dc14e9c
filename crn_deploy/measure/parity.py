"""How close a picture is to the reference, in the units an image user judges: 0..255 levels and dB."""

from __future__ import annotations

import math

import numpy as np

OFF_LEVELS = 2  # a pixel channel "off" by more than this many levels counts against parity


def compare_images(candidate: np.ndarray, reference: np.ndarray) -> dict:
    """max/mean absolute error (levels), PSNR (dB; None when identical), share of values off by > 2 levels."""
    if candidate.shape != reference.shape:
        raise ValueError(f"shapes differ: candidate {list(candidate.shape)} vs reference {list(reference.shape)}")
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "psnr_db": psnr(float(np.mean(diff**2))),
        "frac_off_gt2": float(np.mean(diff > OFF_LEVELS)),
    }


def psnr(mse: float, peak: float = 255.0) -> float | None:
    """Peak signal-to-noise ratio in dB; None for identical pictures (infinite PSNR, not valid JSON)."""
    return None if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def passes(parity: dict, *, max_abs: float | None = None, min_psnr: float | None = None) -> bool:
    if max_abs is not None and parity["max_abs"] > max_abs:
        return False
    return min_psnr is None or parity["psnr_db"] is None or parity["psnr_db"] >= min_psnr
