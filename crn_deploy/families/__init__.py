"""The generator families as plugins, torch-free side: one module a family (``crn.py``, ``pix2pixhd.py``,
``spade.py``, ``oasis.py``, ``posgen.py``, ...) holding its config, presets, inputs, label set and size rules,
registered in ``FAMILIES`` when this package is imported. The torch side of a family is ``crn_deploy/models/<name>.py``.

Adding a family takes its two files and its tests: every module here but ``base`` is imported, in name order; a
module several families build on (``spade_trunk``) registers none.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    FAMILIES, IMAGE, INSTANCES, LABELS, STYLE, ConfigRecord, Family, Role, TensorSpec, config_fields_from_options,
    draw_styles, family, family_of_config, family_of_config_dict, find_preset, model_inputs, register,
)

__all__ = ["FAMILIES", "IMAGE", "INSTANCES", "LABELS", "STYLE", "ConfigRecord", "Family", "Role", "TensorSpec",
           "config_fields_from_options", "draw_styles", "family", "family_of_config", "family_of_config_dict",
           "find_preset", "model_inputs",
           "register"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")
