"""pix2pixHD through the whole pipeline: an official-format latest_net_G.pth (what the official trainer
saves) -> crn-export (family recognised from the keys) -> the runtime, crn-run and crn-bench with
label and instance maps; the CRN path untouched beside it."""

import importlib.util
import json
import warnings

import cv2
import numpy as np
import pytest
import torch

from crn_deploy import runtime
from crn_deploy.measure.reference import load_reference
from crn_deploy.cli.bench import main as bench_main
from crn_deploy.cli.export import main as export_main
from crn_deploy.cli.run import main as run_main
from crn_deploy.data.synthetic import cityscapes_scene
from crn_deploy.families import find_preset
from crn_deploy.manifest import Manifest
from crn_deploy.models import pix2pixhd as p2p
from crn_deploy.runtime.synthesizer import NoInstancesWarning

pytestmark = pytest.mark.numerics  # float rounding could move these verdicts: CI reruns them (pyproject)

RES = (64, 128)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A local-enhancer generator's state_dict saved the official way, and the model that wrote it."""
    folder = tmp_path_factory.mktemp("checkpoints")
    model = p2p.random_init(p2p.Pix2PixHDGenerator(find_preset("pix2pixhd-tiny")[1]), 7).eval()
    torch.save(model.state_dict(), folder / "latest_net_G.pth")
    return folder / "latest_net_G.pth", model


@pytest.fixture(scope="module")
def engines(official, tmp_path_factory):
    out = tmp_path_factory.mktemp("p2p-engines")
    argv = [str(official[0]), "--res", "64x128", "--precision", "fp32", "--precision", "fp16", "--out", str(out),
            "--name", "label2city"]
    assert export_main(argv) == 0
    return out


def test_export_recognises_the_family_and_records_two_inputs(engines):
    manifest = Manifest.read(engines / "label2city-64x128-fp16.json")
    assert manifest.family_name == "pix2pixhd" and manifest.label_set.name == "cityscapes-labelids"
    assert [(s.name, s.dtype, s.shape) for s in manifest.input_specs] == [
        ("labels", "uint8", (1, 1, *RES)), ("instances", "int32", (1, 1, *RES))]
    assert manifest.parity.psnr_db >= 45  # FP16 against the FP32 reference
    fp32 = Manifest.read(engines / "label2city-64x128-fp32.json")
    assert fp32.parity.max_abs <= 1


def test_the_runtime_takes_label_and_instance_maps(engines, official):
    labels, instances = cityscapes_scene(*RES, seed=21)
    with torch.no_grad():
        expected = official[1](torch.from_numpy(labels)[None, None], torch.from_numpy(instances)[None, None])[0]
    with runtime.load(engines / "label2city-64x128-fp32.onnx") as synth:
        got = synth(labels, instances=instances)
        assert np.abs(got.astype(int) - expected.numpy().astype(int)).max() <= 1
        bigger = synth(cv2.resize(labels, (256, 128), interpolation=cv2.INTER_NEAREST),
                       instances=cv2.resize(instances, (256, 128), interpolation=cv2.INTER_NEAREST))
        assert bigger.shape == (128, 256, 3)
        two_cars = np.full(RES, 7, np.uint8)  # road, with two cars side by side
        two_cars[20:40, 30:90] = 26
        instances = two_cars.astype(np.int32)
        instances[20:40, 60:90] = 26001
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            merged = synth(two_cars)
        assert [w.category for w in caught] == [NoInstancesWarning] and merged.shape == (*RES, 3)
        # without the instance map the boundary between the touching cars is gone from the input
        assert not np.array_equal(merged, synth(two_cars, instances=instances))


def test_crn_run_reads_cityscapes_label_and_instance_files(engines, tmp_path):
    city = tmp_path / "gtFine" / "bonn"
    city.mkdir(parents=True)
    for i in range(2):
        labels, instances = cityscapes_scene(*RES, seed=30 + i)
        cv2.imwrite(str(city / f"bonn_{i:06d}_000019_gtFine_labelIds.png"), labels)
        cv2.imwrite(str(city / f"bonn_{i:06d}_000019_gtFine_instanceIds.png"), instances.astype(np.uint16))
    out = tmp_path / "out"
    artifact = str(engines / "label2city-64x128-fp16.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoInstancesWarning)  # the instance maps were found and used
        assert run_main([artifact, "--input", str(tmp_path / "gtFine" / "**" / "*_labelIds.png"),
                         "--output", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "bonn/bonn_000000_000019_gtFine_labelIds.png", "bonn/bonn_000001_000019_gtFine_labelIds.png"]
    with runtime.load(artifact) as synth:
        labels, instances = cityscapes_scene(*RES, seed=30)
        expected = synth(labels, instances=instances)
    written = cv2.imread(str(out / "bonn" / "bonn_000000_000019_gtFine_labelIds.png"))[..., ::-1]
    assert np.array_equal(written, expected)
    assert run_main([artifact, "--input", "synthetic", "--frames", "3", "--output", str(tmp_path / "s.avi")]) == 0


def test_crn_bench_measures_pix2pixhd_against_its_pytorch_reference(engines, tmp_path):
    report = tmp_path / "bench.json"
    assert bench_main([str(engines), "--warmup", "0", "--iterations", "2", "--duration", "0", "--samples", "2",
                       "--json", str(report)]) == 0
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report.read_text())["rows"]}
    # crn-export built TensorRT-RTX engines where TensorRT-RTX is installed: listed, built, not run without a GPU
    engines = {("tensorrt-rtx", p) for p in ("fp16", "fp32")} if importlib.util.find_spec("tensorrt_rtx") else set()
    assert set(rows) == {("onnxruntime-cpu", "fp16"), ("onnxruntime-cpu", "fp32"), ("torch-cpu", "fp32")} | engines
    assert rows[("onnxruntime-cpu", "fp32")]["parity"]["max_abs"] <= 1
    assert rows[("onnxruntime-cpu", "fp16")]["parity"]["psnr_db"] >= 45
    assert "car" in rows[("onnxruntime-cpu", "fp16")]["parity"]["per_class"]  # the label-id set's names


def test_the_reference_behind_a_pix2pixhd_artifact_is_the_checkpoint(engines, official):
    labels, instances = cityscapes_scene(*RES, seed=22)
    with load_reference(engines / "label2city-64x128-fp16.onnx") as reference:
        got = reference(labels, instances=instances)
    with torch.no_grad():
        expected = official[1](torch.from_numpy(labels)[None, None], torch.from_numpy(instances)[None, None])[0]
    assert np.array_equal(got, expected.numpy())


def test_a_model_trained_without_instances_exports_and_streams(tmp_path):
    out = tmp_path / "e"
    assert export_main(["--preset", "pix2pixhd-tiny", "--random-weights", "--no-instance", "--res", "32x64",
                        "--precision", "fp32", "--out", str(out)]) == 0
    manifest = Manifest.read(out / "pix2pixhd-tiny-seed0-32x64-fp32.json")
    assert [s.name for s in manifest.input_specs] == ["labels"]
    # the synthetic scene comes with instance maps: an artifact that takes none streams without them
    assert run_main([str(manifest.artifact_path), "--input", "synthetic", "--frames", "2",
                     "--output", str(tmp_path / "frames")]) == 0


def test_a_random_weights_preset_and_sizes_refused_with_the_nearest(tmp_path, capsys):
    out = tmp_path / "e"
    assert export_main(["--preset", "pix2pixhd-tiny", "--random-weights", "--res", "32x64", "--out", str(out)]) == 0
    assert json.loads((out / "pix2pixhd-tiny-seed0-32x64-fp16.json").read_text())["source"]["family"] == "pix2pixhd"
    assert export_main(["--preset", "label2city_512p", "--random-weights", "--res", "64x100", "--out", str(out)]) == 2
    assert "nearest valid: 64x96, 64x112" in capsys.readouterr().err
