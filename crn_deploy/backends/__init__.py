"""Backends run exactly one artifact shape: uint8 ids [B,1,H,W] in, uint8 images out.

Each imports its library lazily, so importing this package costs nothing. The engine targets' table names
the module that runs each target's engines (``tensorrt``, ``openvino``); ``engine_module`` finds it. Each
such module offers the same functions: ``open_engine``, ``rebuild_command``, ``engines_unavailable_reason``
and ``why_engine_cannot_run_here``.
"""

import importlib

from .base import Backend

__all__ = ["Backend", "engine_module"]


def engine_module(target):
    """The backend module that runs ``target``'s engines (an ``EngineTarget``), as the targets' table names it."""
    return importlib.import_module(f"{__name__}.{target.backend}")
