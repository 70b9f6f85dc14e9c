"""Real TensorRT and CUDA: these run where a GPU (and TensorRT) is present and skip elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from crn_deploy.data.synthetic import street_layouts
from crn_deploy.measure.parity import compare_images

from .conftest import TINY_RES, export_tiny


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _engines_reason() -> str | None:
    from crn_deploy.build.engine import engines_unavailable_reason

    return engines_unavailable_reason()


needs_trt = pytest.mark.skipif(_engines_reason() is not None, reason=f"needs TensorRT and a GPU: {_engines_reason()}")
needs_cuda = pytest.mark.skipif(not _torch_cuda(), reason="needs a CUDA GPU visible to torch")


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_real_engine_matches_the_reference(tmp_path, tiny_source, precision, cuda_graphs):
    from crn_deploy import runtime
    from crn_deploy.build.engine import build_engine

    manifest = build_engine(export_tiny(tiny_source, tmp_path, precisions=[precision])[0], log=lambda _: None)
    ids = street_layouts(3, *TINY_RES, seed=5)
    engine = manifest.path.with_suffix(".engine")
    with runtime.load(engine, cuda_graphs=cuda_graphs) as synth, runtime.load_reference(manifest.path) as ref:
        assert synth.backend.graphs_active == cuda_graphs
        parity = compare_images(synth(ids), ref(ids))
    assert parity["max_abs"] <= 1 if precision == "fp32" else parity["psnr_db"] >= 40


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
    assert parity["max_abs"] <= 1 if precision == "fp32" else parity["psnr_db"] >= 40
