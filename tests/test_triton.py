"""Triton model repositories: every config.pbtxt parses as Triton's own ModelConfig protobuf
(tritonclient's model_config_pb2) with the artifact's platform, tensors and instance groups, and the
model files are the artifacts'. No Triton server runs here (see docs/scaling-out.md)."""

import json
import shutil

import numpy as np
import pytest
from google.protobuf import text_format

from crn_deploy.artifacts.triton import config_text, write_model
from crn_deploy.cli.export import main as export_main
from crn_deploy.manifest import Manifest
from crn_deploy.records import EngineRecord
from crn_deploy.targets import TENSORRT

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient is not installed: pip install -e '.[test]'")
TYPES = {"uint8": model_config_pb2.TYPE_UINT8, "int32": model_config_pb2.TYPE_INT32,
         "float32": model_config_pb2.TYPE_FP32}


def _parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """spade-tiny with a VAE (three inputs: uint8 labels, int32 instances, float32 z), exported with --triton."""
    root = tmp_path_factory.mktemp("triton")
    assert export_main(["--preset", "spade-tiny", "--random-weights", "--option", "use_vae=True", "--option", "z_dim=8",
                        "--precision", "fp16", "--out", str(root / "engines"), "--triton", str(root / "repo"),
                        "--triton-instances", "2", "--no-engine"]) == 0
    return root


def test_export_writes_an_onnxruntime_model_whose_config_triton_can_parse(repository):
    manifest = Manifest.read(repository / "engines" / "spade-tiny-seed0-32x64-fp16.json")
    folder = repository / "repo" / "spade-tiny-seed0-32x64-fp16-onnxruntime"
    config = _parse((folder / "config.pbtxt").read_text())
    assert config.name == folder.name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (s.name, TYPES[s.dtype], list(s.shape)) for s in manifest.input_specs]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("image", model_config_pb2.TYPE_UINT8, [1, 32, 64, 3])]
    assert [(g.count, g.kind, list(g.gpus)) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_AUTO, [])]  # two on each GPU, or on the CPU without one
    assert (folder / "1" / "model.onnx").read_bytes() == manifest.artifact_path.read_bytes()
    assert json.loads((folder / "crn-manifest.json").read_text())["config"]["use_vae"] is True
    assert not list(folder.rglob("*.tmp*"))


def test_an_engine_becomes_a_tensorrt_plan_model_that_names_its_tensorrt_version(repository, tmp_path):
    """Plumbing only: a stand-in engine file, as crn-build would record it (no TensorRT here)."""
    engines = tmp_path / "engines"
    shutil.copytree(repository / "engines", engines)
    manifest = Manifest.read(engines / "spade-tiny-seed0-32x64-fp16.json")
    plan = engines / "spade-tiny-seed0-32x64-fp16.engine"
    plan.write_bytes(b"stand-in plan")
    manifest.set_engine_record(TENSORRT, EngineRecord.from_dict({
        "file": plan.name, "sha256": "0" * 64, "size_bytes": plan.stat().st_size, "tensorrt_version": "11.4.0",
        "gpu": {"name": "stand-in", "compute_capability": "9.0"}}))
    manifest.write(manifest.path)
    folder = write_model(tmp_path / "repo", Manifest.read(manifest.path), "tensorrt")
    text = (folder / "config.pbtxt").read_text()
    config = _parse(text)
    assert config.platform == "tensorrt_plan" and folder.name.endswith("-tensorrt")
    assert "TensorRT 11.4.0: the server's must match" in text
    assert (folder / "1" / "model.plan").read_bytes() == b"stand-in plan"
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]  # plans: GPU


def test_crn_build_writes_onnxruntime_models_where_no_engine_can_be_built(repository, tmp_path, capsys, monkeypatch):
    from crn_deploy.backends import tensorrt as trt_module
    from crn_deploy.cli.build import main as build_main

    monkeypatch.setattr(trt_module, "engines_unavailable_reason", lambda target, to_build=False: "no builder here")
    onnx = repository / "engines" / "spade-tiny-seed0-32x64-fp16.onnx"
    assert build_main([str(onnx), "--triton", str(tmp_path / "repo")]) == 0
    assert "no engines built" in capsys.readouterr().out
    folder = tmp_path / "repo" / "spade-tiny-seed0-32x64-fp16-onnxruntime"
    assert _parse((folder / "config.pbtxt").read_text()).platform == "onnxruntime_onnx"


def test_every_family_and_a_larger_picture_give_valid_configs(tiny_artifacts, tmp_path):
    """CRN (labels only), and a PosGen artifact whose picture is larger than its label map."""
    crn = _parse(config_text(tiny_artifacts["fp16"], "onnxruntime"))
    assert [t.name for t in crn.input] == ["labels"] and list(crn.output[0].dims) == [1, 64, 96, 3]
    assert export_main(["--preset", "posgen-tiny", "--random-weights", "--res", "32x64", "--out-res", "64x128",
                        "--precision", "fp32", "--out", str(tmp_path), "--triton", str(tmp_path / "repo")]) == 0
    folder = tmp_path / "repo" / "posgen-tiny-seed0-32x64-out64x128-fp32-onnxruntime"
    config = _parse((folder / "config.pbtxt").read_text())
    assert list(config.input[0].dims) == [1, 1, 32, 64] and list(config.output[0].dims) == [1, 64, 128, 3]
    assert np.array_equal(np.frombuffer((folder / "1" / "model.onnx").read_bytes()[:64], np.uint8),
                          np.frombuffer((tmp_path / "posgen-tiny-seed0-32x64-out64x128-fp32.onnx").read_bytes()[:64],
                                        np.uint8))
