"""Our TensorRT backend's plumbing, run against FAKES of cuda-python and TensorRT (tests/fake_gpu.py).

These check slot ring, buffer sizes, CUDA-graph use and fallback, ordering, freeing and error
messages. They do not test TensorRT or a GPU: tests marked ``gpu`` do, where one is present.
"""

from __future__ import annotations

import hashlib

import json
import shutil
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from crn_deploy.backends import cuda as cuda_module
from crn_deploy.backends import tensorrt as trt_module
from crn_deploy.backends.tensorrt import TensorRTBackend, check_engine_compatible
from crn_deploy.artifacts.engine import check_network_precision
from crn_deploy.data.synthetic import street_layouts
from crn_deploy.errors import ArtifactError, CrnError, UsageError
from crn_deploy.manifest import Manifest
from crn_deploy.precisions import FP16
from crn_deploy.records import EngineRecord
from crn_deploy.targets import RTX, TENSORRT

from .conftest import TINY_RES, DLPackOnly
from .fake_gpu import FakeCudart, FakeDiagnostics, FakeTensorRT, FakeTensorRTRTX, fake_kernel, fake_plan
from .fake_gpu import GARBAGE


def _engine_artifact(tmp_path, source: Manifest, *, version="11.4.0.106", cc="9.0", plan=None, size=None):
    shutil.copy(source.artifact_path, tmp_path)
    shutil.copy(source.path, tmp_path)
    manifest = Manifest.read(tmp_path / source.path.name)
    if plan is None:
        plan = fake_plan(manifest.input_spec.shape, manifest.output_spec.shape,
                         instances=len(manifest.input_specs) > 1)
    engine = manifest.artifact_path.with_suffix(".engine")
    engine.write_bytes(plan)
    manifest.set_engine_record(TENSORRT, EngineRecord.from_dict({
        "file": engine.name, "sha256": hashlib.sha256(plan).hexdigest(), "size_bytes": size or len(plan),
        "tensorrt_version": version, "gpu": {"name": "Fake GPU", "compute_capability": cc}}))
    manifest.write(manifest.path)
    return manifest, engine


@pytest.fixture()
def fake(tmp_path, tiny_artifacts):
    cudart = FakeCudart()
    manifest, engine = _engine_artifact(tmp_path, tiny_artifacts["fp16"])

    def open_backend(**options):
        trt = options.pop("trt", None) or FakeTensorRT(cudart)
        backend = TensorRTBackend(engine, manifest, tensorrt_module=trt, cudart_module=options.pop("cudart", cudart),
                                  **options)
        return backend.open(), trt

    return SimpleNamespace(cudart=cudart, manifest=manifest, engine=engine, open=open_backend)


def _frames(n):
    return [street_layouts(1, *TINY_RES, seed=s) for s in range(n)]


def _expected(ids):
    return fake_kernel(ids, (1, *TINY_RES, 3))


def test_fake_pipelined_frames_come_back_in_order(fake):
    backend, _ = fake.open(slots=2)
    frames = _frames(5)
    pending = [backend.submit(ids) for ids in frames]  # more frames than slots: the ring waits
    for ids, handle in zip(frames, pending, strict=True):
        assert np.array_equal(handle.result(), _expected(ids))
    backend.close()


def test_fake_buffers_are_sized_from_the_engine_io_and_all_freed(fake):
    backend, trt = fake.open(slots=3)
    h, w = TINY_RES
    sizes = sorted(len(buf) for buf in fake.cudart.host_mem.values())
    assert sizes == sorted([h * w] * 3 + [h * w * 3] * 3)  # pinned in/out per slot
    scratch = FakeTensorRT.SCRATCH_BYTES  # one block, shared by the slots' contexts (they run one at a time)
    assert sorted(len(buf) for buf in fake.cudart.device_mem.values()) == sorted(sizes + [scratch])
    kinds = [kind for kind, _ in fake.cudart.live]
    assert kinds.count("stream") == 3 and kinds.count("event") == 9 and kinds.count("graph_exec") == 3
    assert len(trt.contexts) == 3 and all(c.scratch[1] == scratch for c in trt.contexts)
    backend.close()
    assert fake.cudart.live == set() and trt.contexts == [] and trt.configs_freed_under_a_context == 0


def test_fake_cuda_graph_is_captured_after_one_eager_run_and_replayed(fake):
    backend, trt = fake.open(slots=2)
    # per slot (each with its own context, as trtexec keeps one per stream): one eager run, one captured
    assert backend.graphs_active and [c.enqueues for c in trt.contexts] == [2, 2]
    for ids in _frames(3):
        assert np.array_equal(backend.run(ids), _expected(ids))
    assert [c.enqueues for c in trt.contexts] == [2, 2] and fake.cudart.launches == 3  # frames replay graphs
    assert backend.graph_captures is None  # counted only where the library captures its own (TensorRT-RTX)
    backend.close()


def test_fake_capture_failure_falls_back_to_plain_enqueue(fake):
    cudart = FakeCudart(capture_fails=True)
    backend, trt = fake.open(slots=2, cudart=cudart, trt=FakeTensorRT(cudart))
    assert not backend.graphs_active
    for ids in _frames(3):
        assert np.array_equal(backend.run(ids), _expected(ids))
    assert [c.enqueues for c in trt.contexts] == [2 + 2, 2 + 1] and cudart.launches == 0  # frames alternate slots
    backend.close()
    assert cudart.live == set()


def test_fake_graphs_can_be_turned_off(fake):
    backend, trt = fake.open(cuda_graphs=False)
    backend.run(_frames(1)[0])
    assert not backend.graphs_active and fake.cudart.launches == 0
    assert [c.enqueues for c in trt.contexts] == [2, 1]  # one warm-up each, then the frame on the first slot
    backend.close()


def test_fake_device_input_and_device_output(fake):
    backend, _ = fake.open()
    ids = _frames(1)[0]
    ok, ptr = fake.cudart.cudaMalloc(ids.nbytes)
    np.ctypeslib.as_array(fake.cudart.device_mem[ptr])[:] = ids.ravel()
    on_device = SimpleNamespace(__cuda_array_interface__={"shape": ids.shape, "typestr": "|u1", "data": (ptr, False),
                                                          "version": 3, "strides": None, "stream": None})
    assert np.array_equal(backend.submit_device(on_device).result(), _expected(ids))
    image = backend.submit_device(on_device, output="device").result()
    cai = image.__cuda_array_interface__
    assert cai["typestr"] == "|u1" and cai["shape"] == (1, *TINY_RES, 3)
    assert cai["data"][0] in fake.cudart.device_mem
    backend.close()


def test_fake_device_input_errors(fake):
    backend, _ = fake.open()
    host = np.zeros((1, 1, *TINY_RES), np.uint8)
    with pytest.raises(UsageError, match="in cpu memory, not on GPU 0"):  # NumPy speaks DLPack
        backend.submit_device(host)
    with pytest.raises(UsageError, match="__cuda_array_interface__ or __dlpack__"):
        backend.submit_device([[0]])
    wrong_place = SimpleNamespace(__cuda_array_interface__={"shape": host.shape, "typestr": "|u1", "version": 3,
                                                            "data": (host.ctypes.data, False)})
    with pytest.raises(UsageError, match="not in GPU 0's memory"):
        backend.submit_device(wrong_place)
    wrong_type = SimpleNamespace(__cuda_array_interface__={"shape": host.shape, "typestr": "<f4", "version": 3,
                                                           "data": (host.ctypes.data, False)})
    with pytest.raises(UsageError, match="must be uint8"):
        backend.submit_device(wrong_type)
    with pytest.raises(UsageError, match="in cpu memory, not on GPU 0"):  # a CPU DLPack tensor
        backend.submit_device(DLPackOnly(host))
    backend.close()


def _on_fake_device(cudart, array: np.ndarray, typestr: str = "|u1"):
    """``array`` copied into fake device memory, seen through the CUDA array interface (producer: legacy stream)."""
    ok, ptr = cudart.cudaMalloc(array.nbytes)
    np.ctypeslib.as_array(cudart.device_mem[ptr])[:] = array.view(np.uint8).ravel()
    return SimpleNamespace(__cuda_array_interface__={"shape": array.shape, "typestr": typestr, "data": (ptr, False),
                                                     "version": 3, "strides": None, "stream": None})


def test_fake_device_input_is_timed_like_host_input(fake):
    """With timing on, a frame read from device memory gets trtexec's split too: its copy in is a device-to-device
    copy, timed between events recorded around it (CUDA has no time for an event never recorded)."""
    backend, _ = fake.open(timing=True)
    ids = _frames(1)[0]
    pending = backend.submit_device(_on_fake_device(fake.cudart, ids))
    assert np.array_equal(pending.result(), _expected(ids))
    assert pending.timings == {"d2d": 1.0, "compute": 1.0, "d2h": 1.0, "enqueue": pending.enqueue_ms}
    on_device = backend.submit_device(_on_fake_device(fake.cudart, ids), output="device")
    on_device.result()
    assert set(on_device.timings) == {"d2d", "compute", "enqueue"}
    host = backend.submit(ids)
    host.result()
    assert set(host.timings) == {"h2d", "compute", "d2h", "enqueue"}
    backend.close()


@pytest.mark.parametrize("target", [TENSORRT, RTX])
def test_fake_frames_submitted_from_another_thread_run_on_the_chosen_gpu(tmp_path, tiny_artifacts, target):
    """CUDA's current device is per thread: the streaming loop submits from its own thread, where it is 0."""
    cudart = FakeCudart(devices=2, compute_capability=(8, 9))
    if target is RTX:
        manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
        trt = FakeTensorRTRTX(cudart)
    else:
        manifest, engine = _engine_artifact(tmp_path, tiny_artifacts["fp16"], cc="8.9")
        trt = FakeTensorRT(cudart)
    backend = TensorRTBackend(engine, manifest, target=target, device=1, cuda_graphs=target is RTX,
                              tensorrt_module=trt, cudart_module=cudart).open()
    assert {c.device for c in trt.contexts} == {1}
    frames, results, failures = _frames(3), [], []

    def stream_thread():  # as runtime/stream.py's synthesize stage does
        try:
            results.extend(backend.submit(ids).result() for ids in frames)
        except CrnError as e:
            failures.append(e)

    worker = threading.Thread(target=stream_thread)
    worker.start()
    worker.join()
    assert failures == [] and trt.errors == [] and len(results) == 3
    assert all(np.array_equal(out, _expected(ids)) for out, ids in zip(results, frames, strict=True))
    backend.close()
    assert cudart.live == set()


def test_looking_at_the_gpu_leaves_the_callers_device_alone(monkeypatch):
    from crn_deploy.backends.tensorrt import engines_unavailable_reason, gpu_properties

    cudart = FakeCudart(devices=2)
    monkeypatch.setattr(cuda_module, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_module, "import_engine_library", lambda target=None: FakeTensorRT(cudart))
    cudart.cudaSetDevice(1)  # the caller (torch, say) works on GPU 1
    assert gpu_properties()["name"] == "Fake GPU" and engines_unavailable_reason() is None
    assert cudart.current_device == 1


def test_fake_device_memory_counts_the_weights_as_cudaMemGetInfo_sees_them(fake):
    free_before = fake.cudart.cudaMemGetInfo()[1]
    backend, trt = fake.open(slots=2)
    held = free_before - fake.cudart.cudaMemGetInfo()[1]
    assert backend.device_memory_bytes() == held == backend.opened_device_bytes
    io = sum(len(buf) for buf in fake.cudart.device_mem.values()) - trt.SCRATCH_BYTES
    assert held == trt.WEIGHTS_BYTES + trt.SCRATCH_BYTES + io  # weights, one scratch block, the slots' buffers
    backend.close()
    assert fake.cudart.cudaMemGetInfo()[1] == free_before


def test_fake_warm_up_runs_on_zeroed_inputs_not_on_uninitialised_memory(fake, tmp_path, tiny_artifacts):
    backend, _ = fake.open(slots=2)
    assert fake.cudart.uninitialised_reads == 0  # trtexec fills its inputs before the first enqueue too
    backend.close()
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path / "rtx", tiny_artifacts["fp16"], mkdir=True)
    _rtx_backend(manifest, engine, cudart, FakeTensorRTRTX(cudart)).open().close()
    assert cudart.uninitialised_reads == 0 and GARBAGE != 0


def test_dlpack_views_read_pointer_shape_and_dtype_in_place():
    from crn_deploy.backends.dlpack import KDL_CPU, dlpack_view

    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)[:, 1:]
    view = dlpack_view(array)
    assert view.ptr == array.ctypes.data and view.shape == (2, 2, 4) and view.dtype == "uint8"
    assert view.device_type == KDL_CPU and view.strides == (12, 4, 1)
    assert dlpack_view(np.zeros(3, np.float32)).dtype == "other"
    assert dlpack_view(np.zeros(3, np.int32)).dtype == "int32"


def test_fake_other_tensorrt_version_or_gpu_is_refused_with_the_fix(tmp_path, tiny_artifacts):
    manifest, _ = _engine_artifact(tmp_path, tiny_artifacts["fp16"], version="10.13.0.35", cc="8.9")
    with pytest.raises(ArtifactError, match=r"TensorRT 10\.13\.0\.35 and this is TensorRT 11\.4\.0\.106.*crn-build"):
        check_engine_compatible(manifest, TENSORRT, "11.4.0.106", {"name": "H100", "compute_capability": "8.9"})
    with pytest.raises(ArtifactError, match=r"compute capability 8\.9\) and this GPU is H100 \(9\.0\).*crn-build"):
        check_engine_compatible(manifest, TENSORRT, "10.13.0.35", {"name": "H100", "compute_capability": "9.0"})


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated or changed since export"),
    ("corrupt", "cannot deserialize"),
    ("no_context", "out of GPU memory"),
])
def test_fake_bad_engines_get_one_clear_error_and_free_everything(tmp_path, tiny_artifacts, case, message):
    cudart = FakeCudart()
    plan = b"garbage" if case == "corrupt" else None
    manifest, engine = _engine_artifact(tmp_path, tiny_artifacts["fp16"], plan=plan,
                                        size=10**6 if case == "truncated" else None)
    trt = FakeTensorRT(cudart, context_fails=case == "no_context")
    backend = TensorRTBackend(engine, manifest, tensorrt_module=trt, cudart_module=cudart)
    with pytest.raises(CrnError, match=message):
        backend.open()
    assert cudart.live == set() and not backend.is_open


def test_fake_engine_changed_since_build_is_refused_by_its_digest(tmp_path, tiny_artifacts):
    cudart = FakeCudart()
    manifest, engine = _engine_artifact(tmp_path, tiny_artifacts["fp16"])
    plan = bytearray(engine.read_bytes())
    plan[-1] ^= 1  # same size: only the SHA-256 in the manifest tells
    engine.write_bytes(bytes(plan))
    backend = TensorRTBackend(engine, manifest, tensorrt_module=FakeTensorRT(cudart), cudart_module=cudart)
    with pytest.raises(ArtifactError, match=r"SHA-256 its manifest records: changed since export; rebuild it with: "
                                            r"crn-build"):
        backend.open()
    assert cudart.live == set() and not backend.is_open


def test_fake_engine_through_the_runtime(fake, monkeypatch):
    from crn_deploy import runtime

    monkeypatch.setattr(trt_module, "import_engine_library", lambda target=None: FakeTensorRT(fake.cudart))
    monkeypatch.setattr(cuda_module, "import_cudart", lambda: fake.cudart)
    ids = _frames(1)[0]
    with runtime.load(fake.engine) as synth:
        assert synth.backend.name == "tensorrt"
        assert np.array_equal(synth(ids[0, 0]), _expected(ids)[0])
        assert synth(street_layouts(1, 128, 192, seed=1)[0, 0]).shape == (128, 192, 3)
        frames = _frames(4)
        handles = [synth.submit(f) for f in frames]
        assert all(np.array_equal(h.result(), _expected(f)) for h, f in zip(handles, frames, strict=True))
    assert fake.cudart.live == set()


def _fake_network(conv_dtype, norm_dtype):
    trt = FakeTensorRT(FakeCudart())
    tensor = SimpleNamespace
    layers = [SimpleNamespace(type="CONVOLUTION", name="conv", get_output=lambda i: tensor(dtype=conv_dtype),
                              get_input=lambda i: tensor(dtype="HALF")),
              SimpleNamespace(type="NORMALIZATION", name="norm", get_output=lambda i: tensor(dtype=norm_dtype),
                              get_input=lambda i: tensor(dtype=norm_dtype))]
    return trt, SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)


def test_network_precision_check_refuses_a_silent_fp32_engine(tmp_path):
    trt, good = _fake_network("HALF", "FLOAT")
    check_network_precision(trt, good, FP16, tmp_path / "x.onnx")
    trt, fp32_convs = _fake_network("FLOAT", "FLOAT")
    with pytest.raises(ArtifactError, match="would not give a fp16 engine.*conv computes in FLOAT"):
        check_network_precision(trt, fp32_convs, FP16, tmp_path / "x.onnx")
    trt, fp16_norm = _fake_network("HALF", "HALF")
    with pytest.raises(ArtifactError, match="norm normalizes in HALF"):
        check_network_precision(trt, fp16_norm, FP16, tmp_path / "x.onnx")


class _FakeBuilderConfig:
    """A fake TensorRT builder config whose timing caches are their bytes; it rejects one timed elsewhere."""

    def __init__(self) -> None:
        self.cache = None

    def create_timing_cache(self, data: bytes):
        return None if data.startswith(b"corrupt") else data  # TensorRT's answer to a blob it cannot read

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache is None:
            raise TypeError("set_timing_cache(): incompatible function arguments")  # as the binding says
        if cache.startswith(b"other") and not ignore_mismatch:
            return False
        self.cache = cache
        return True


def test_fake_timing_cache_is_reused_unless_timed_on_another_gpu(tmp_path):
    from crn_deploy.artifacts.engine import use_timing_cache

    path, config, logs = tmp_path / "timing.cache", _FakeBuilderConfig(), []
    assert use_timing_cache(config, path, logs.append) == b""  # none yet: an empty one, returned to be held
    assert config.cache == b"" and logs == []
    path.write_bytes(b"this gpu")
    use_timing_cache(config, path, logs.append)
    assert config.cache == b"this gpu" and logs == []
    path.write_bytes(b"other gpu")
    use_timing_cache(config, path, logs.append)
    assert config.cache == b"" and "another GPU or TensorRT version" in logs[0]


def test_fake_unreadable_timing_cache_is_replaced_like_a_foreign_one(tmp_path):
    from crn_deploy.artifacts.engine import use_timing_cache

    path, config, logs = tmp_path / "timing.cache", _FakeBuilderConfig(), []
    path.write_bytes(b"corrupt: cut short by a full disk")
    assert use_timing_cache(config, path, logs.append) == b""
    assert config.cache == b"" and "cannot be read" in logs[0]


def _detailed_layer_information(*weight_types: str) -> str:
    """Engine-inspector JSON laid out as a DETAILED engine prints it (made up here, for the fake). A type ending in
    " island" is a convolution of an FP32 island (its ONNX node name, which TensorRT keeps, says so)."""
    layers = [{"Name": f"/trunk/Conv_{i}" + ("_fp32island + /trunk/LeakyRelu" if kind.endswith(" island") else ""),
               "LayerType": "CaskConvolution", "ParameterType": "Convolution",
               "Weights": {"Type": kind.split()[0], "Count": 9}} for i, kind in enumerate(weight_types)]
    layers.append({"Name": "norm", "LayerType": "Normalization", "ParameterType": "Normalization"})
    return json.dumps({"Layers": layers, "Bindings": ["labels", "image"]})


@pytest.mark.parametrize("precision, weight_types, expected", [
    ("fp16", None, None),  # names only (the default verbosity): nothing to check, nothing claimed
    ("fp16", ("Half", "Half"), {"Half": 2}),
    ("fp32", ("Float",), {"Float": 1}),
    ("fp16", ("Half", "Float"), "refused"),  # FP16 asked for, an FP32 convolution delivered
    ("fp32", ("Half",), "refused"),
    ("fp16", ("Half", "Float island", "Float island"), {"Half": 1, "Float": 2}),  # FP32 by design (PosGen's tail)
    ("fp16", ("Half", "Half island"), "refused"),  # an island that lost its FP32
])
def test_fake_built_engine_is_checked_for_its_convolution_weight_types(tiny_artifacts, precision, weight_types,
                                                                       expected):
    from crn_deploy.artifacts.engine import check_built_engine

    manifest = tiny_artifacts[precision]
    options = {} if weight_types is None else {"layer_information": _detailed_layer_information(*weight_types)}
    trt = FakeTensorRT(FakeCudart(), **options)
    plan = fake_plan(manifest.input_spec.shape, manifest.output_spec.shape)
    if expected == "refused":
        with pytest.raises(ArtifactError, match=f"convolutions hold weights of types .* {precision}"):
            check_built_engine(trt, None, plan, manifest)
    else:
        assert check_built_engine(trt, None, plan, manifest) == expected


def test_fake_built_engine_with_other_io_is_not_kept(tiny_artifacts):
    from crn_deploy.artifacts.engine import check_built_engine

    manifest = tiny_artifacts["fp16"]
    plan = fake_plan(manifest.input_spec.shape, (1, 8, 8, 3))
    with pytest.raises(CrnError, match=r"image is UINT8 \[1, 8, 8, 3\], not uint8 \[1, 64, 96, 3\]; not kept"):
        check_built_engine(FakeTensorRT(FakeCudart()), None, plan, manifest)


def test_dlpack_is_preferred_and_a_streamless_cuda_array_waits_on_the_legacy_stream():
    from crn_deploy.backends.device_arrays import LEGACY_STREAM, describe

    host = np.zeros((1, 1, 4, 6), np.uint8)
    cai = {"shape": host.shape, "typestr": "|u1", "version": 2, "data": (host.ctypes.data, False)}
    both = DLPackOnly(host)
    both.__cuda_array_interface__ = cai
    assert describe(both).device == "cpu"  # DLPack spoke first: it orders the producer's work itself
    streamless = SimpleNamespace(__cuda_array_interface__=cai)
    assert describe(streamless).stream == LEGACY_STREAM  # torch writes version 2, without a stream
    assert describe(SimpleNamespace(__cuda_array_interface__={**cai, "version": 3, "stream": 7})).stream == 7


def test_fake_two_input_engine_takes_instance_maps_on_every_path(tmp_path):
    """A pix2pixHD artifact's engine: a uint8 and an int32 input per slot, uploaded, bound by name, read
    in place from device memory, and through the runtime; the instance ids reach the 'kernel'."""
    from crn_deploy.models.checkpoint import random_model
    from crn_deploy.data.synthetic import cityscapes_scene
    from crn_deploy.families import find_preset

    from .conftest import export_tiny

    source = random_model(find_preset("pix2pixhd-tiny")[1], 1, "pix2pixhd-tiny")
    exported = export_tiny(source, tmp_path / "onnx", precisions=("fp16",), resolutions=((32, 64),))[0]
    manifest, engine = _engine_artifact(tmp_path, exported)
    cudart = FakeCudart()
    backend = TensorRTBackend(engine, manifest, tensorrt_module=FakeTensorRT(cudart), cudart_module=cudart).open()
    scenes = [cityscapes_scene(32, 64, seed=s) for s in range(3)]
    frames = [(ids[None, None], inst[None, None]) for ids, inst in scenes]
    handles = [backend.submit(ids, inst) for ids, inst in frames]
    for (ids, inst), handle in zip(frames, handles, strict=True):
        expected = fake_kernel(ids, (1, 32, 64, 3), inst)
        assert np.array_equal(handle.result(), expected)
        assert not np.array_equal(expected, fake_kernel(ids, (1, 32, 64, 3)))  # the instances mattered
    on_device = []
    for array, typestr in ((frames[0][0], "|u1"), (frames[0][1], "<i4")):
        ok, ptr = cudart.cudaMalloc(array.nbytes)
        np.ctypeslib.as_array(cudart.device_mem[ptr])[:] = array.view(np.uint8).ravel()
        on_device.append(SimpleNamespace(__cuda_array_interface__={
            "shape": array.shape, "typestr": typestr, "data": (ptr, False), "version": 3, "strides": None,
            "stream": None}))
    expected = fake_kernel(frames[0][0], (1, 32, 64, 3), frames[0][1])
    assert np.array_equal(backend.submit_device(*on_device).result(), expected)
    with pytest.raises(UsageError, match="takes labels, instances: pass every one"):
        backend.submit_device(on_device[0])
    with pytest.raises(UsageError, match=r"must be int32 \[1, 1, 32, 64\], got uint8"):
        backend.submit_device(on_device[0], on_device[0])
    backend.close()
    for array in on_device:
        cudart.cudaFree(array.__cuda_array_interface__["data"][0])  # the producer's own memory
    assert cudart.live == set()


# TensorRT-RTX engines through the same backend (fakes: our plumbing only) ------------------------------

def _rtx_artifact(tmp_path, source: Manifest, *, version="1.7.1.116", ccs=("8.0", "8.6", "8.9", "12.x"),
                  beside: Manifest | None = None, mkdir: bool = False):
    """A fake RTX engine of ``source`` in tmp_path, or ``beside`` the engines an artifact there already has."""
    if mkdir:
        tmp_path.mkdir()
    if beside is None:
        shutil.copy(source.artifact_path, tmp_path)
        shutil.copy(source.path, tmp_path)
    manifest = beside or Manifest.read(tmp_path / source.path.name)
    plan = fake_plan(manifest.input_spec.shape, manifest.output_spec.shape)
    engine = tmp_path / RTX.engine_name(manifest.artifact_path.stem)
    engine.write_bytes(plan)
    digest = hashlib.sha256(plan).hexdigest()
    manifest.set_engine_record(RTX, EngineRecord(engine.name, digest, len(plan), version, "rtx", "TensorRT-RTX",
                                                 compute_capabilities=list(ccs)))
    manifest.write(manifest.path)
    return manifest, engine


def _rtx_backend(manifest, engine, cudart, trt, **options):
    return TensorRTBackend(engine, manifest, target=RTX, tensorrt_module=trt, cudart_module=cudart, **options)


def test_fake_rtx_engine_keeps_its_runtime_cache_beside_it_and_captures_its_own_graphs(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 9), name=b"GeForce RTX 4090")
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    cache = tmp_path / "tiny-64x96-fp16.rtx.runtime-cache"
    cache.write_bytes(b"KERNELS from the last start")
    trt = FakeTensorRTRTX(cudart)
    backend = _rtx_backend(manifest, engine, cudart, trt, cuda_graphs=True).open()
    config = trt.contexts[0].get_runtime_config()
    assert backend.name == "tensorrt-rtx" and backend.runtime_cache_path == cache
    assert config.cache.kernels == b"KERNELS from the last start"  # loaded at open
    assert config.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE" and backend.graphs_active
    ids = _frames(1)[0]
    assert np.array_equal(backend.run(ids), _expected(ids))
    assert cudart.launches == 0  # no graph of ours around the library's own capture
    config.cache.kernels = b"KERNELS now with more"
    backend.close()
    assert cache.read_bytes() == b"KERNELS now with more"  # written at close
    assert cudart.live == set()


def test_fake_rtx_engine_without_graphs_or_cache_file(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 6))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    trt = FakeTensorRTRTX(cudart)
    with _rtx_backend(manifest, engine, cudart, trt, cuda_graphs=False) as backend:
        assert trt.contexts[0].get_runtime_config().cuda_graph_strategy == "DISABLED" and not backend.graphs_active
        assert backend.graph_captures is None
    assert (tmp_path / "tiny-64x96-fp16.rtx.runtime-cache").read_bytes().startswith(b"KERNELS")


def test_fake_rtx_engine_refused_by_its_header_check_names_the_causes_and_frees_everything(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    trt = FakeTensorRTRTX(cudart, invalid=FakeDiagnostics.OLD_CUDA_DRIVER | FakeDiagnostics.UNSUPPORTED_CC)
    with pytest.raises(ArtifactError, match=r"cannot run .*\.rtx\.engine on this machine \(UNSUPPORTED_CC, "
                                            r"OLD_CUDA_DRIVER\).*crn-build .* --target rtx --compute-capability 89"):
        _rtx_backend(manifest, engine, cudart, trt).open()
    assert cudart.live == set()


def test_fake_rtx_engine_for_other_gpus_or_another_version_is_refused_with_the_fix(tmp_path, tiny_artifacts):
    manifest, _ = _rtx_artifact(tmp_path, tiny_artifacts["fp16"], ccs=("8.6",))
    rtx_4090, h100 = {"name": "RTX 4090", "compute_capability": "8.9"}, {"name": "H100", "compute_capability": "9.0"}
    with pytest.raises(ArtifactError, match=r"TensorRT-RTX 1\.7\.1\.116 and this is TensorRT-RTX 1\.8\.0.*"
                                            r"--target rtx"):
        check_engine_compatible(manifest, RTX, "1.8.0", rtx_4090)
    with pytest.raises(ArtifactError, match=r"compute capabilities 8\.6 and this GPU is RTX 4090 \(8\.9\); rebuild "
                                            r"it with: crn-build \S+ --target rtx --compute-capability 89$"):
        check_engine_compatible(manifest, RTX, "1.7.1.116", rtx_4090)
    with pytest.raises(ArtifactError, match=r"TensorRT-RTX has no target for compute capability 9\.0: build a "
                                            r"TensorRT engine on this GPU with: crn-build \S+\.onnx$"):
        check_engine_compatible(manifest, RTX, "1.7.1.116", h100)
    default, _ = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    blackwell = {"name": "RTX 5090", "compute_capability": "12.0"}
    assert check_engine_compatible(default, RTX, "1.7.1.116", blackwell).compute_capabilities[-1] == "12.x"


def test_fake_tensorrt_and_rtx_engines_lie_side_by_side_and_load_by_name(tmp_path, tiny_artifacts, monkeypatch):
    from crn_deploy import runtime
    from crn_deploy.manifest import manifest_for

    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _engine_artifact(tmp_path, tiny_artifacts["fp16"], cc="8.9")
    _rtx_artifact(tmp_path, tiny_artifacts["fp16"], beside=manifest)
    manifest = Manifest.read(manifest.path)
    assert {t.name for t in manifest.engine_records()} == {"tensorrt", "rtx"}
    rtx_engine = tmp_path / manifest.engine_record(RTX).file
    assert manifest_for(rtx_engine) == manifest_for(engine) == manifest.path
    libraries = {"tensorrt": FakeTensorRT(cudart), "tensorrt_rtx": FakeTensorRTRTX(cudart)}
    monkeypatch.setattr(trt_module, "import_engine_library", lambda target: libraries[target.module])
    monkeypatch.setattr(cuda_module, "import_cudart", lambda: cudart)
    ids = _frames(1)[0]
    for path, name in ((engine, "tensorrt"), (rtx_engine, "tensorrt-rtx")):
        with runtime.load(path) as synth:
            assert synth.backend.name == name and np.array_equal(synth(ids[0, 0]), _expected(ids)[0])
    assert libraries["tensorrt_rtx"].contexts_made and libraries["tensorrt"].contexts_made


def test_fake_rtx_engine_captures_once_per_slot_and_never_while_frames_run(tmp_path, tiny_artifacts):
    """TensorRT-RTX keys its graph on the bound addresses and shapes and captures again when they change: each
    slot has its own context bound once to its own buffers, so frames only replay."""
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    trt = FakeTensorRTRTX(cudart)
    backend = _rtx_backend(manifest, engine, cudart, trt, slots=2, cuda_graphs=True).open()
    assert backend.graphs_active and trt.captures == 2  # one per slot's context, during warm-up
    frames = _frames(6)
    pending = [backend.submit(ids) for ids in frames]
    assert all(np.array_equal(p.result(), _expected(ids)) for p, ids in zip(pending, frames, strict=True))
    assert trt.captures == 2 and backend.graph_captures == trt.captures  # none while frames ran; we count as it does
    backend.close()


def test_fake_rtx_runtime_configuration_outlives_its_contexts(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    trt = FakeTensorRTRTX(cudart)
    with _rtx_backend(manifest, engine, cudart, trt) as backend:
        ids = _frames(1)[0]
        assert np.array_equal(backend.run(ids), _expected(ids))
    assert trt.errors == [] and trt.configs_freed_under_a_context == 0  # held while used, freed after them
    assert trt.contexts == [] and cudart.live == set()


def test_fake_rtx_engine_that_cannot_be_captured_says_graphs_are_off(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    trt = FakeTensorRTRTX(cudart, capturable=False)
    with _rtx_backend(manifest, engine, cudart, trt, cuda_graphs=True) as backend:
        assert not backend.graphs_active and backend.graph_captures is None and trt.captures == 0


def test_fake_rtx_kernels_are_kept_once_warmed_up_so_a_killed_stream_keeps_them(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    cache = tmp_path / "tiny-64x96-fp16.rtx.runtime-cache"
    backend = _rtx_backend(manifest, engine, cudart, FakeTensorRTRTX(cudart)).open()
    assert cache.read_bytes() == b"KERNELS compiled for this GPU"  # written at open: a SIGKILL later loses nothing
    backend.close()


def test_fake_rtx_kernel_cache_of_another_gpu_is_refused_with_a_warning(tmp_path, tiny_artifacts):
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    cache = tmp_path / "tiny-64x96-fp16.rtx.runtime-cache"
    cache.write_bytes(b"compiled for another GPU")
    with pytest.warns(UserWarning, match=r"runtime-cache was refused by TensorRT-RTX .*compiles its kernels again"):
        backend = _rtx_backend(manifest, engine, cudart, FakeTensorRTRTX(cudart)).open()
    assert cache.read_bytes() == b"KERNELS compiled for this GPU"  # replaced by this GPU's
    backend.close()


def test_fake_rtx_kernel_cache_that_cannot_be_written_warns_once_at_close(tmp_path, tiny_artifacts, monkeypatch):
    import warnings

    def read_only(path, data):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(trt_module, "write_bytes_atomic", read_only)
    cudart = FakeCudart(compute_capability=(8, 9))
    manifest, engine = _rtx_artifact(tmp_path, tiny_artifacts["fp16"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = _rtx_backend(manifest, engine, cudart, FakeTensorRTRTX(cudart)).open()
        assert caught == []  # the engine runs; the save after warm-up failing is said once, at close
        backend.close()
    assert len(caught) == 1 and "kernel cache not saved" in str(caught[0].message)
