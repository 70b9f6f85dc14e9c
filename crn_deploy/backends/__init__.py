"""Backends run exactly one artifact shape: uint8 ids [B,1,H,W] in, uint8 images out.

Each imports its library lazily, so importing this package costs nothing.
"""

from .base import Backend

__all__ = ["Backend"]
