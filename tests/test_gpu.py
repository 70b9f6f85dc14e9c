"""Real TensorRT and CUDA: these run where a GPU (and TensorRT) is present and skip elsewhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crn_deploy.data.synthetic import street_layouts
from crn_deploy.errors import UsageError
from crn_deploy.measure.parity import compare_images
from crn_deploy.targets import TENSORRT

from .conftest import TINY_RES, CudaArrayOnly, DLPackOnly, export_tiny


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _engines_reason() -> str | None:
    from crn_deploy.backends.tensorrt import engines_unavailable_reason

    return engines_unavailable_reason()


needs_trt = pytest.mark.skipif(_engines_reason() is not None, reason=f"needs TensorRT and a GPU: {_engines_reason()}")
needs_cuda = pytest.mark.skipif(not _torch_cuda(), reason="needs a CUDA GPU visible to torch")


def _rtx_reason() -> str | None:
    from crn_deploy.backends.tensorrt import target_unavailable_here
    from crn_deploy.targets import RTX

    return target_unavailable_here(RTX)


needs_rtx = pytest.mark.skipif(_rtx_reason() is not None, reason=f"needs an RTX-class GPU: {_rtx_reason()}")


def _ort_cuda() -> bool:
    from crn_deploy.backends.onnxruntime import available_devices

    return "cuda" in available_devices()


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu with its CUDA provider")


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_real_engine_matches_the_reference(tmp_path, tiny_source, precision, cuda_graphs):
    from crn_deploy import runtime
    from crn_deploy.measure.reference import load_reference
    from crn_deploy.artifacts.engine import build_engine

    manifest = build_engine(export_tiny(tiny_source, tmp_path, precisions=[precision])[0], log=lambda _: None)
    ids = street_layouts(3, *TINY_RES, seed=5)
    engine = manifest.path.with_suffix(".engine")
    with runtime.load(engine, cuda_graphs=cuda_graphs) as synth, load_reference(manifest.path) as ref:
        assert synth.backend.graphs_active == cuda_graphs
        parity = compare_images(synth(ids), ref(ids))
    assert parity.max_abs <= 1 if precision == "fp32" else parity.psnr_db >= 40


@pytest.mark.gpu
@needs_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_real_rtx_engine_matches_the_reference_and_keeps_its_runtime_cache(tmp_path, tiny_source, precision,
                                                                           cuda_graphs):
    from crn_deploy import runtime
    from crn_deploy.measure.reference import load_reference
    from crn_deploy.artifacts.engine import BuildOptions, build_engine
    from crn_deploy.backends.tensorrt import gpu_properties
    from crn_deploy.targets import RTX

    here = gpu_properties()["compute_capability"]
    options = BuildOptions(target=RTX, compute_capabilities=(here,) if here == "7.5" else ())
    manifest = build_engine(export_tiny(tiny_source, tmp_path, precisions=[precision])[0], options, log=lambda _: None)
    ids = street_layouts(3, *TINY_RES, seed=5)
    engine = tmp_path / manifest.engine_record(RTX).file
    with runtime.load(engine, cuda_graphs=cuda_graphs) as synth, load_reference(manifest.path) as ref:
        assert synth.backend.graphs_active == cuda_graphs
        warmed_up = synth.backend.graph_captures
        parity = compare_images(synth(ids), ref(ids))
        assert synth.backend.graph_captures == warmed_up  # frames replay: no capture after warm-up
    assert parity.max_abs <= 1 if precision == "fp32" else parity.psnr_db >= 40
    assert (tmp_path / engine.name.replace(".rtx.engine", ".rtx.runtime-cache")).stat().st_size > 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_pytorch_cuda_reference_matches_cpu(tiny_source, precision, cuda_graphs):
    from crn_deploy.backends.torch_ref import TorchBackend

    ids = street_layouts(1, *TINY_RES, seed=6)
    with TorchBackend(tiny_source.model, "fp32", "cpu") as cpu, \
            TorchBackend(tiny_source.model, precision, "cuda", input_shape=ids.shape, cuda_graphs=cuda_graphs) as gpu:
        assert gpu.graphs_active == cuda_graphs
        parity = compare_images(gpu.run(ids), cpu.run(ids))
        assert np.array_equal(gpu.run(ids), gpu.run(ids))
    assert parity.max_abs <= 1 if precision == "fp32" else parity.psnr_db >= 40


def _assert_device_input_matches(backend, on_gpu, expected):
    """The GPU tensor, seen through each protocol alone, gives the host path's picture."""
    for protocol in (CudaArrayOnly, DLPackOnly):
        assert np.array_equal(backend.submit_device(protocol(on_gpu)).result(), expected), protocol


@pytest.fixture(scope="module")
def real_fp16_engine(tmp_path_factory, tiny_source):
    """The tiny model's FP16 engine, built once on this machine's TensorRT and GPU."""
    from crn_deploy.artifacts.engine import build_engine

    out = tmp_path_factory.mktemp("real-engines")
    manifest = build_engine(export_tiny(tiny_source, out, precisions=["fp16"])[0], log=lambda _: None)
    return manifest.path.with_suffix(".engine")


@pytest.mark.gpu
@needs_trt
@needs_cuda
def test_real_engine_reads_labels_from_gpu_memory_in_place(real_fp16_engine):
    import torch

    from crn_deploy import runtime

    ids = street_layouts(1, *TINY_RES, seed=7)
    on_gpu = torch.from_numpy(ids).cuda()
    with runtime.load(real_fp16_engine) as synth:
        from_host = synth.backend.submit(ids).result()
        _assert_device_input_matches(synth.backend, on_gpu, from_host)
        image = synth.backend.submit_device(on_gpu, output="device").result()
        assert np.array_equal(torch.as_tensor(image, device="cuda").cpu().numpy(), from_host)
        with pytest.raises(UsageError, match="in cpu memory"):
            synth.backend.submit_device(torch.from_numpy(ids))


@pytest.mark.gpu
@needs_trt
def test_real_engine_pipelined_frames_come_back_in_order(real_fp16_engine):
    from crn_deploy import runtime

    frames = street_layouts(5, *TINY_RES, seed=8)
    with runtime.load(real_fp16_engine, slots=2) as synth:
        serial = [synth.backend.submit(frames[i : i + 1]).result() for i in range(len(frames))]
        pending = [synth.backend.submit(frames[i : i + 1]) for i in range(len(frames))]  # wraps the ring twice
        assert all(np.array_equal(p.result(), s) for p, s in zip(pending, serial, strict=True))
    assert len({s.tobytes() for s in serial}) == len(frames)  # different frames, so order is observable


@pytest.mark.gpu
@needs_trt
def test_real_engine_reports_the_trtexec_split(real_fp16_engine):
    from crn_deploy.backends.tensorrt import TensorRTBackend
    from crn_deploy.manifest import Manifest, manifest_for

    manifest = Manifest.read(manifest_for(real_fp16_engine))
    with TensorRTBackend(real_fp16_engine, manifest, timing=True) as backend:
        pending = backend.submit(street_layouts(1, *TINY_RES, seed=9))
        pending.result()
    assert set(pending.timings) == {"h2d", "compute", "d2h", "enqueue"}
    assert all(pending.timings[part] > 0 for part in ("h2d", "compute", "d2h"))


@pytest.mark.gpu
@needs_trt
def test_real_engine_reports_no_more_memory_than_cudaMemGetInfo_saw_it_take(real_fp16_engine):
    from crn_deploy.backends.tensorrt import TensorRTBackend
    from crn_deploy.manifest import Manifest, manifest_for

    with TensorRTBackend(real_fp16_engine, Manifest.read(manifest_for(real_fp16_engine))) as backend:
        reported, measured = backend.device_memory_bytes(), backend.opened_device_bytes
    # weights, scratch and buffers are all held; the driver allocates in pages of up to 2 MiB
    assert 0 < reported <= measured + (2 << 20)


@pytest.mark.gpu
@needs_trt
def test_real_engine_of_another_tensorrt_version_is_refused(real_fp16_engine, tmp_path):
    import shutil

    from crn_deploy import runtime
    from crn_deploy.errors import ArtifactError
    from crn_deploy.manifest import Manifest, manifest_for

    manifest = Manifest.read(manifest_for(real_fp16_engine))
    for path in (real_fp16_engine, manifest.artifact_path):
        shutil.copy(path, tmp_path / path.name)
    manifest.set_engine_record(TENSORRT, dataclasses.replace(manifest.engine_record(TENSORRT),
                                                             runtime_version="10.12.0.1"))
    manifest.write(tmp_path / manifest.path.name)
    with pytest.raises(ArtifactError, match=r"TensorRT 10\.12\.0\.1 and this is TensorRT .*crn-build"):
        runtime.load(tmp_path / real_fp16_engine.name)


@pytest.mark.gpu
@needs_ort_cuda
@needs_cuda
def test_onnxruntime_cuda_reads_gpu_label_maps_in_place(tiny_artifacts):
    import torch

    from crn_deploy import runtime

    ids = street_layouts(1, *TINY_RES, seed=10)
    on_gpu = torch.from_numpy(ids).cuda()
    with runtime.load(tiny_artifacts["fp16"].artifact_path, device="cuda") as synth:
        from_host = synth.run_ids(ids)
        _assert_device_input_matches(synth.backend, on_gpu, from_host)
        with pytest.raises(UsageError, match="runs on cuda but the label map is in cpu memory"):
            synth.backend.submit_device(ids)


@pytest.mark.gpu
@needs_cuda
def test_cuda_tensors_are_read_in_place_through_both_protocols():
    import torch

    from crn_deploy.backends.device_arrays import describe

    tensor = torch.arange(24, dtype=torch.uint8, device="cuda").reshape(1, 1, 4, 6)
    for protocol in (CudaArrayOnly, DLPackOnly):
        array = describe(protocol(tensor), consumer_stream=torch.cuda.current_stream().cuda_stream)
        assert (array.ptr, array.shape, array.device) == (tensor.data_ptr(), (1, 1, 4, 6), "cuda")
        assert array.dtype == "uint8" and array.contiguous
    assert not any(describe(protocol(tensor[..., ::2]), 0).contiguous for protocol in (CudaArrayOnly, DLPackOnly))
    assert describe(tensor.cpu()).device == "cpu"

