"""Real TensorRT-RTX engines, built on this machine (no GPU needed: TensorRT-RTX compiles ahead of time on
the CPU). Running them needs an RTX-class GPU: that is the GPU suite's part.

Every family's tiny preset in FP32 and FP16, and one full-size graph (CRN cityscapes-1024p, FP16, at
1024x2048): the build succeeds with no warning, the plan holds the graph's weights at that precision (its
size within 20% of their bytes, plus the plan's fixed part), and the manifest's record round-trips. A
graph holding an operator TensorRT-RTX refuses gets one line naming the node and leaves nothing written.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import helper

from crn_deploy.artifacts.engine import BuildOptions, build_engine
from crn_deploy.cli.bench import main as bench_main
from crn_deploy.cli.build import main as build_main
from crn_deploy.cli.export import main as export_main
from crn_deploy.families import FAMILIES, find_preset
from crn_deploy.files import sha256_file
from crn_deploy.records import Source
from crn_deploy.manifest import Manifest
from crn_deploy.precisions import FP16
from crn_deploy.sizes import Sizes
from crn_deploy.targets import RTX, RTX_DEFAULT_COMPUTE_CAPABILITIES

from .conftest import export_tiny

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                reason="TensorRT-RTX is not installed (pip install 'crn-deploy[rtx]')")

PLAN_FIXED_BYTES = 6 << 20  # a plan's own part beside the weights: 2.0-4.2 MiB measured on the tiny graphs
TINY_PRESETS = {fam.name: fam.test_preset for fam in FAMILIES.values()}


def weight_bytes(onnx_path) -> int:
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(onnx_path)).graph.initializer)


def assert_rtx_engine(manifest: Manifest, compute_capabilities=RTX_DEFAULT_COMPUTE_CAPABILITIES) -> None:
    import tensorrt_rtx

    record = manifest.engine_record(RTX)
    engine = manifest.path.parent / record.file
    assert record.runtime == "TensorRT-RTX" and record.runtime_version == tensorrt_rtx.__version__
    assert record.compute_capabilities == list(compute_capabilities)
    assert record.builder_warnings == [], record.builder_warnings
    assert engine.name.endswith(".rtx.engine") and engine.stat().st_size == record.size_bytes
    weights = weight_bytes(manifest.artifact_path)
    assert abs(record.size_bytes - weights) <= 0.2 * weights + PLAN_FIXED_BYTES, (record.size_bytes, weights)
    again = Manifest.read(manifest.path)
    assert again.engine_record(RTX) == record
    assert again.to_dict() == json.loads(manifest.path.read_text())


@pytest.fixture(scope="module", params=sorted(TINY_PRESETS))
def tiny_family_artifacts(request, tmp_path_factory):
    from crn_deploy.models.checkpoint import random_model

    preset = TINY_PRESETS[request.param]
    config = find_preset(preset)[1]
    source = random_model(config, seed=5, preset_name=preset)
    out = tmp_path_factory.mktemp(f"rtx-{request.param}")
    resolution = FAMILIES[request.param].native_resolution(config)
    return export_tiny(source, out, resolutions=(resolution,), name=preset)


@pytest.mark.slow  # the quick tier builds one engine per family already (test_conformance.py)
def test_every_family_builds_rtx_engines_in_fp32_and_fp16(tiny_family_artifacts):
    for manifest in tiny_family_artifacts:
        build_engine(manifest, BuildOptions(target=RTX), log=lambda _: None)
        assert_rtx_engine(manifest)
    fp32, fp16 = sorted(tiny_family_artifacts, key=lambda m: m.precision != "fp32")
    assert weight_bytes(fp16.artifact_path) < weight_bytes(fp32.artifact_path)


def test_named_compute_capabilities_are_built_and_recorded(tiny_artifacts, tmp_path):
    manifest = _copy(tiny_artifacts["fp16"], tmp_path)
    assert build_main([str(manifest.artifact_path), "--target", "rtx", "--compute-capability", "75,86,120"]) == 0
    manifest = Manifest.read(manifest.path)
    assert_rtx_engine(manifest, ("7.5", "8.6", "12.0"))
    assert manifest.engine_record(RTX).builder["compute_capabilities"] == ["7.5", "8.6", "12.0"]


@pytest.mark.slow
def test_the_full_size_cityscapes_1024p_graph_builds_at_1024x2048(tmp_path):
    from crn_deploy.graph import write_model
    from crn_deploy.models.checkpoint import random_model
    from crn_deploy.models.registry import model_family

    source = random_model(find_preset("cityscapes-1024p")[1], seed=0, preset_name="cityscapes-1024p")
    family = model_family(source.family)
    resolution = (1024, 2048)
    shell, tensors = family.graph_parts(source.config, family.weights(source.model), Sizes.same(resolution), FP16, 1)
    write_model(shell, tensors, tmp_path / "crn-1024x2048-fp16.onnx")
    del shell, tensors
    manifest = Manifest("crn", "crn-1024x2048-fp16.onnx", Sizes.same(resolution), FP16, 1, family.contract,
                        source.config, source.label_set, Source.from_dict(source.source))
    manifest.write(tmp_path / "crn-1024x2048-fp16.json")
    build_engine(manifest, BuildOptions(target=RTX), log=lambda _: None)
    assert_rtx_engine(manifest)
    assert manifest.engine_record(RTX).size_bytes > 150 << 20  # ~99 M parameters in FP16


def test_an_operator_tensorrt_rtx_refuses_gets_one_line_naming_the_node_and_nothing_is_written(
        tiny_artifacts, tmp_path, capsys):
    manifest = _copy(tiny_artifacts["fp16"], tmp_path)
    model = onnx.load(str(manifest.artifact_path))
    first = model.graph.node[0].output[0]  # a side branch TensorRT-RTX has no importer for
    model.graph.node.append(helper.make_node("Det", [first], ["det_out"], name="refused_det_node"))
    onnx.save(model, str(manifest.artifact_path))
    manifest.sections["onnx"].update(size_bytes=manifest.artifact_path.stat().st_size,
                                     sha256=sha256_file(manifest.artifact_path))  # as if exported so
    manifest.write(manifest.path)
    before = manifest.path.read_bytes()
    capsys.readouterr()
    assert build_main([str(manifest.artifact_path), "--target", "rtx"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "refused_det_node" in err and "(Det)" in err and "nothing was written" in err
    assert manifest.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([manifest.path.name, manifest.artifact_path.name])


def test_crn_export_builds_an_rtx_engine_without_a_gpu(tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: with a GPU, the default target is TensorRT")
    out = tmp_path / "engines"
    assert export_main(["--preset", "spade-tiny", "--random-weights", "--res", "64x128", "--precision", "fp16",
                        "--out", str(out)]) == 0
    (manifest,) = [Manifest.read(p) for p in out.glob("*.json")]
    assert_rtx_engine(manifest)
    assert "TensorRT-RTX 1." in capsys.readouterr().out


def test_bench_lists_an_rtx_engine_as_built_and_needing_a_gpu(tiny_artifacts, tmp_path):
    if _gpu_present():
        pytest.skip("a GPU is here: the RTX engine runs (the GPU suite's rows)")
    manifest = _copy(tiny_artifacts["fp16"], tmp_path)
    build_engine(manifest, BuildOptions(target=RTX), log=lambda _: None)
    report = tmp_path / "bench.json"
    assert bench_main([str(tmp_path), "--backend", "tensorrt", "--backend", "onnxruntime", "--warmup", "0",
                       "--iterations", "1", "--duration", "0", "--json", str(report), "--min-psnr", "30"]) == 0
    rows = {row["backend"]: row for row in json.loads(report.read_text())["rows"]}
    assert rows["tensorrt-rtx"]["status"] == "built; needs a GPU to run"
    assert rows["tensorrt-rtx"]["engine"]["runtime"] == "TensorRT-RTX"
    assert rows["onnxruntime-cpu"]["status"] == "PASSED"


def test_triton_gets_an_onnxruntime_model_for_an_rtx_only_artifact(tiny_artifacts, tmp_path, capsys):
    manifest = _copy(tiny_artifacts["fp16"], tmp_path)
    repo = tmp_path / "repo"
    assert build_main([str(manifest.artifact_path), "--target", "rtx", "--triton", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "Triton's TensorRT backend does not load TensorRT-RTX engines" in out
    assert sorted(p.name for p in repo.iterdir()) == [f"{manifest.artifact_path.stem}-onnxruntime"]
    assert (repo / f"{manifest.artifact_path.stem}-onnxruntime" / "1" / "model.onnx").is_file()


def _copy(source: Manifest, folder) -> Manifest:
    import shutil

    shutil.copy(source.artifact_path, folder)
    shutil.copy(source.path, folder)
    return Manifest.read(folder / source.path.name)


def _gpu_present() -> bool:
    from crn_deploy.backends.cuda import Cuda
    from crn_deploy.errors import CrnError

    try:
        Cuda().close()
    except CrnError:
        return False
    return True


def test_weight_bytes_counts_every_initializer(tiny_artifacts):
    model = onnx.load(str(tiny_artifacts["fp32"].artifact_path))
    total = sum(np.prod(t.dims, dtype=np.int64) * 4 for t in model.graph.initializer if t.data_type == 1)
    assert weight_bytes(tiny_artifacts["fp32"].artifact_path) >= total > 0
