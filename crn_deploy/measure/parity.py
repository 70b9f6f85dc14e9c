"""How close a picture is to the reference, in the units an image user judges: 0..255 levels, dB, SSIM."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..records import Parity

OFF_LEVELS = 2  # a pixel channel "off" by more than this many levels counts against parity
VALIDATION_SEED = 1000  # the export's synthetic layouts, and a CPU engine build's; benchmarks use other seeds
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW = 0.01, 0.03, 1.5, 11  # Wang et al. 2004


def compare_images(candidate: np.ndarray, expected: np.ndarray, **where) -> Parity:
    """max/mean absolute error (levels), PSNR (dB; None when identical), SSIM, share of values off
    by > 2 levels, and non-finite values in the candidate (only a float candidate can hold them).
    ``where``: the record's reference, inputs, samples and per_class fields."""
    if candidate.shape != expected.shape:
        raise ValueError(f"shapes differ: candidate {list(candidate.shape)} vs reference {list(expected.shape)}")
    nonfinite = int(np.size(candidate) - np.count_nonzero(np.isfinite(candidate)))
    diff = np.abs(np.nan_to_num(candidate.astype(np.float64)) - expected.astype(np.float64))
    return Parity(max_abs=float(diff.max()), mean_abs=float(diff.mean()), psnr_db=psnr(float(np.mean(diff**2))),
                  ssim=mean_ssim(candidate, expected), frac_off_gt2=float(np.mean(diff > OFF_LEVELS)),
                  nonfinite=nonfinite, **where)


def psnr(mse: float, peak: float = 255.0) -> float | None:
    """Peak signal-to-noise ratio in dB; None for identical pictures (infinite PSNR, not valid JSON)."""
    return None if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM of two [H,W] or [H,W,C] pictures: 11x11 Gaussian window (sigma 1.5), per channel."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def mean_ssim(candidate: np.ndarray, reference: np.ndarray) -> float:
    """SSIM averaged over every [H,W,3] picture of a batch ([...,H,W,3])."""
    flat_c = candidate.reshape(-1, *candidate.shape[-3:])
    flat_r = reference.reshape(-1, *reference.shape[-3:])
    return float(np.mean([ssim(np.nan_to_num(c.astype(np.float64)), r) for c, r in zip(flat_c, flat_r, strict=True)]))


def per_class(candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    """Errors over the pixels of each class present in ``labels`` ([N,1,H,W] ids; outputs [N,(k,)H,W,3]).

    Where do FP16 errors concentrate? Ids >= the class count are reported together as "void"."""
    ids = np.minimum(labels[:, 0], len(names))  # every void id counts as one class
    if candidate.ndim == 5:  # k images per map: every image shares its map's labels
        ids = np.repeat(ids[:, None], candidate.shape[1], axis=1)
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    result = {}
    for class_id in np.unique(ids):
        errors = diff[ids == class_id]  # [pixels, 3]
        result[names[class_id] if class_id < len(names) else "void"] = {
            "pixels": len(errors), "mean_abs": float(errors.mean()), "max_abs": float(errors.max()),
            "psnr_db": psnr(float(np.mean(errors**2))),
        }
    return result


def worst_class(images: np.ndarray, reference: np.ndarray, ids: np.ndarray, names: tuple[str, ...],
                parity: Parity, max_abs: float) -> str:
    """The class that fared worst, as '<name> (<dB> dB, up to <n> levels)': by its largest difference where
    ``parity`` missed the levels limit ``max_abs``, else by its PSNR. ``ids``: [N,1,h,w] label maps, resized
    (nearest) to the pictures' size where those are larger, each pixel taking its label map pixel's class."""
    h, w = images.shape[-3:-1]
    if ids.shape[-2:] != (h, w):
        ids = np.stack([cv2.resize(m[0], (w, h), interpolation=cv2.INTER_NEAREST)[None] for m in ids])
    classes = per_class(images, reference, ids, names)
    if parity.max_abs > max_abs:
        name, worst = max(classes.items(), key=lambda item: item[1]["max_abs"])
    else:
        name, worst = min(classes.items(), key=lambda item: math.inf if item[1]["psnr_db"] is None
                          else item[1]["psnr_db"])
    psnr_text = "identical" if worst["psnr_db"] is None else f"{worst['psnr_db']:.1f} dB"
    return f"{name} ({psnr_text}, up to {worst['max_abs']:.0f} levels)"


def psnr_figure(parity: Parity) -> str:
    """The PSNR as messages give it."""
    if parity.nonfinite:
        return "no finite PSNR"
    return "identical" if parity.psnr_db is None else f"{parity.psnr_db:.1f} dB"


def parity_text(parity: Parity, against: str) -> str:
    """One line of figures: levels and PSNR against the reference named."""
    return f"vs {against}: max |Δ| {parity.max_abs:.0f}, mean |Δ| {parity.mean_abs:.4f}, PSNR {psnr_figure(parity)}"


def accept_options(parity: Parity, min_psnr: float | None, max_abs: float) -> str:
    """The options that would keep what fell below the floor: only the limits it missed."""
    if parity.nonfinite:  # Parity.passes refuses non-finite pictures whatever the limits
        return "no option: its pictures hold non-finite values (NaN or inf)"
    missed = []
    if min_psnr is not None and parity.psnr_db is not None and parity.psnr_db < min_psnr:
        missed.append(f"--min-psnr {math.floor(parity.psnr_db or 0)}")
    if parity.max_abs > max_abs:
        missed.append(f"--max-abs {math.ceil(parity.max_abs)}")
    return " ".join(missed)
