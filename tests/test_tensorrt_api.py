"""Our TensorRT and TensorRT-RTX calls, checked against the real TensorRT 11 Python bindings and the
installed TensorRT-RTX module (no GPU needed).

The ``tensorrt-cu13-bindings`` wheel holds the compiled module; every name it binds (classes,
methods, properties, enum members) is a NUL-terminated string in it. It cannot be imported here
(no libnvinfer), so its strings are the reference. The linker stores a string that ends another
one as that one's tail ("Builder" inside "IExprBuilder"), so a name counts as bound when it ends
any string. CI downloads the wheel before the tests (see README).

The engine code is shared by both libraries; a name bound in only one of them may be used only on the
paths that target's capabilities open (``EngineTarget`` fields), and those names are listed here.
TensorRT-RTX installs from the public index, so its module is imported and its names read directly.
"""

from __future__ import annotations

import importlib
import inspect
import os
import zipfile
from pathlib import Path

import pytest

from .api_usage import used_in_files, used_names

ROOT = Path(__file__).resolve().parents[1]
TRT_CODE = [ROOT / "crn_deploy/backends/tensorrt.py", ROOT / "crn_deploy/artifacts/engine.py"]
# Names our code gives TensorRT objects (module, builder side, runtime side).
TRT_RECEIVERS = {"trt", "builder", "network", "parser", "config", "cache", "layer", "engine", "inspector", "runtime",
                 "_engine", "context", "_runtime"}


def _bindings_wheel() -> Path:
    override = os.environ.get("CRN_TRT_BINDINGS_WHEEL")
    wheels = [Path(override)] if override else sorted((ROOT / ".cache/tensorrt-bindings").glob("*.whl"))
    if not wheels or not wheels[-1].is_file():
        pytest.skip("TensorRT bindings wheel not downloaded (the README's test command fetches it into "
                    ".cache/tensorrt-bindings)")
    return wheels[-1]


class _BoundNames:
    def __init__(self, binary: bytes) -> None:
        self.binary = binary

    def missing(self, names: set[str]) -> list[str]:
        return sorted(n for n in names if n.encode() + b"\x00" not in self.binary)


@pytest.fixture(scope="module")
def bound_names() -> _BoundNames:
    with zipfile.ZipFile(_bindings_wheel()) as wheel:
        so = next(n for n in wheel.namelist() if n.endswith("tensorrt.so"))
        return _BoundNames(wheel.read(so))


# Used only where the target has compute-capability targets, a header check, a runtime cache or its own
# CUDA-graph capture (TensorRT-RTX).
RTX_ONLY = {"ComputeCapability", "num_compute_capabilities", "set_compute_capability", "get_engine_validity",
            "EngineValidity", "INVALID", "EngineInvalidityDiagnostics", "MALFORMED_ENGINE", "create_runtime_cache",
            "set_runtime_cache", "CudaGraphStrategy", "WHOLE_GRAPH_CAPTURE", "cuda_graph_strategy",
            "is_stream_capturable"}


def test_every_tensorrt_name_we_use_is_bound_in_tensorrt_11(bound_names):
    used = used_in_files(TRT_CODE, TRT_RECEIVERS)
    assert len(used) >= 30  # the collector sees our code: builder, parser, config, engine, context calls
    assert {"execute_async_v3", "set_tensor_address", "build_serialized_network", "STRONGLY_TYPED"} <= used
    missing = bound_names.missing(used - RTX_ONLY)
    assert missing == [], f"not in TensorRT 11's bindings: {missing}"
    assert RTX_ONLY <= used, f"listed as used but not used any more: {sorted(RTX_ONLY - used)}"


def _rtx_bound_names() -> set[str]:
    try:
        trt = importlib.import_module("tensorrt_rtx")
    except ImportError:
        pytest.skip("TensorRT-RTX is not installed (pip install 'crn-deploy[rtx]')")
    names = set(dir(trt)) | set(dir(dict))  # dict methods: the collector also sees calls on JSON dicts
    classes = [obj for obj in vars(trt).values() if inspect.isclass(obj)]
    for cls in classes + [inner for c in classes for inner in vars(c).values() if inspect.isclass(inner)]:
        names |= set(dir(cls)) | set(getattr(cls, "__members__", {}))
    return names


def test_every_name_we_use_on_the_shared_paths_is_bound_in_tensorrt_rtx():
    bound = _rtx_bound_names()
    used = used_in_files(TRT_CODE, TRT_RECEIVERS)
    assert sorted(used - bound) == []
    assert RTX_ONLY <= bound
    assert "platform_has_fast_fp16" not in bound and "FP16" not in bound  # the check can fail: gone from RTX too


def test_the_check_catches_removed_apis(bound_names):
    # BuilderFlag.FP16 and platform_has_fast_fp16 were removed in TensorRT 11; TF32 stays.
    code = ("config.set_flag(trt.BuilderFlag.FP16)\nok = builder.platform_has_fast_fp16\n"
            "config.set_flag(trt.BuilderFlag.TF32)")
    used = used_names(code, TRT_RECEIVERS)
    assert bound_names.missing(used) == ["FP16", "platform_has_fast_fp16"]


def test_version_attribute_comes_from_the_package(bound_names):
    with zipfile.ZipFile(_bindings_wheel()) as wheel:
        init = wheel.read("tensorrt_bindings/__init__.py").decode()
    assert "__version__" in init
