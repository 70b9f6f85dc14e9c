"""Sizes: a label map's and its picture's (``Sizes``), validated once where they enter; parsing and
printing ``HxW``; the multiple-of-a-step rule every family's resolutions follow; near-miss names.

Stdlib only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import UsageError

def did_you_mean(name: str, choices) -> str:
    """"did you mean 'x'? " for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def parse_resolution(text: str) -> tuple[int, int]:
    """'512x1024' -> (512, 1024): height x width."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"resolution '{text}' is not HEIGHTxWIDTH (for example 512x1024)") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"resolution '{text}': height and width must be positive (for example 512x1024)")
    return (h, w)


def format_resolution(resolution: tuple[int, int]) -> str:
    return f"{resolution[0]}x{resolution[1]}"


def check_multiple(resolution: tuple[int, int], step: int, why: str) -> None:
    """Refuse a size that is not a positive multiple of ``step`` on both sides, naming the nearest."""
    h, w = resolution
    if h % step == 0 and w % step == 0 and h > 0 and w > 0:
        return
    nearest = [format_resolution(r) for r in sorted({(hh, ww) for hh in _near(h, step) for ww in _near(w, step)})]
    raise UsageError(f"resolution {format_resolution(resolution)} is not a multiple of {step} on both sides "
                     f"({why}); nearest valid: {', '.join(nearest)}")


def _near(n: int, step: int) -> list[int]:
    below = max(step, n // step * step)
    return sorted({below, below + step} if n % step else {n})


@dataclass(frozen=True)
class Sizes:
    """An artifact's two sizes, height x width: the label map it takes and the picture it paints (the same
    but for families with a pixel-wise head, PosGen). Made once from what a user asked for and passed on."""

    labels: tuple[int, int]
    picture: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(int(v) for v in self.labels))
        object.__setattr__(self, "picture", tuple(int(v) for v in self.picture))
        for size in (self.labels, self.picture):
            if len(size) != 2 or min(size) < 1:
                raise UsageError(f"a size is HEIGHTxWIDTH with both positive, got {size}")

    @classmethod
    def same(cls, resolution: tuple[int, int]) -> Sizes:
        return cls(resolution, resolution)

    @property
    def decoupled(self) -> bool:
        return self.labels != self.picture

    def __str__(self) -> str:
        return format_resolution(self.labels) + (f" -> {format_resolution(self.picture)}" if self.decoupled else "")
