"""PosGen through the pipeline at 1x and 2x output: crn-train (a few steps, then a resume and an FP32 export)
and, on fixed weights (a seeded posgen-tiny checkpoint in crn-train's format), crn-export --out-res -> manifest
with both resolutions -> the runtime, crn-run (which says the picture size) and crn-bench (which compares with
the reference at the output resolution).

Weights trained here land elsewhere on a CPU with other kernels, so no floor is asserted on them: the FP16
verdicts use the seeded checkpoint (57.5 dB, 2 levels at 32x64 >64x128 when written) and pass the limits they
mean (--min-psnr 45 --max-abs 8) explicitly."""

import json
import os

import numpy as np
import onnx
import pytest

from crn_deploy import runtime
from crn_deploy.measure.reference import load_reference
from crn_deploy.cli.bench import main as bench_main
from crn_deploy.cli.export import main as export_main
from crn_deploy.cli.run import main as run_main
from crn_deploy.cli.train import main as train_main
from crn_deploy.data.synthetic import street_layout
from crn_deploy.families import find_preset
from crn_deploy.manifest import Manifest
from crn_deploy.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """posgen-demo trained for a few steps at 32x64: our checkpoint format, config and label set inside."""
    out = tmp_path_factory.mktemp("posgen-run")
    assert train_main(["--preset", "posgen-demo", "--res", "32x64", "--steps", "3", "--lr", "1e-3", "--out", str(out),
                       "--log-every", "1", "--save-every", "3", "--preview-every", "3"]) == 0
    return out


pytestmark = pytest.mark.numerics

LIMITS = ["--min-psnr", "45", "--max-abs", "8"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """posgen-tiny with seeded weights, saved as crn-train saves a model: fixed weights on every CPU."""
    from crn_deploy.models.checkpoint import random_model, save_checkpoint

    source = random_model(find_preset("posgen-tiny")[1], seed=0)
    path = tmp_path_factory.mktemp("posgen-seeded") / "final.safetensors"
    save_checkpoint(path, source.model, source.label_set)
    return path


@pytest.fixture(scope="module")
def engines(seeded, tmp_path_factory):
    out = tmp_path_factory.mktemp("posgen-engines")
    for out_res in ("32x64", "64x128"):
        assert export_main([str(seeded), "--res", "32x64", "--out-res", out_res, "--precision", "fp32",
                            "--precision", "fp16", *LIMITS, "--out", str(out), "--name", "demo"]) == 0
    return out


def test_training_writes_a_posgen_checkpoint_that_resumes(trained):
    loaded = load_checkpoint(trained / "final.safetensors")
    assert loaded.family == "posgen" and loaded.label_set.name == "cityscapes"
    umask = os.umask(0)
    os.umask(umask)
    assert (trained / "final.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would give
    assert train_main(["--resume", str(trained / "checkpoint.pt"), "--steps", "4", "--out", str(trained / "more"),
                       "--save-every", "1"]) == 0
    assert load_checkpoint(trained / "more" / "final.safetensors").family == "posgen"
    assert export_main([str(trained / "more" / "final.safetensors"), "--res", "32x64", "--precision", "fp32",
                        "--out", str(trained / "engines")]) == 0  # FP32 matches its reference on any weights
    assert run_main([str(trained / "engines" / "final-32x64-fp32.onnx"), "--input", "synthetic", "--frames", "2",
                     "--output", str(trained / "frames")]) == 0
    assert len(list((trained / "frames").glob("*.png"))) == 2


def test_an_option_over_a_checkpoints_stored_config_sets_its_fp32_tail_and_a_shape_change_is_refused(
        seeded, tmp_path, capsys):
    checkpoint = str(seeded)
    assert export_main([checkpoint, "--res", "32x64", "--precision", "fp16", "--option", "fp32_tail_blocks=2",
                        *LIMITS, "--out", str(tmp_path), "--name", "tail2", "--no-engine"]) == 0
    manifest = Manifest.read(tmp_path / "tail2-32x64-fp16.json")
    assert manifest.config.fp32_tail_blocks == 2
    graph = onnx.load(str(tmp_path / "tail2-32x64-fp16.onnx"), load_external_data=False)
    islands = {n.input[1].split(".")[0] for n in graph.graph.node if n.op_type == "Conv" and "fp32island" in n.name}
    assert islands == {*list(manifest.config.trunk.widths())[-2:], "fourier"}
    assert export_main([checkpoint, "--res", "32x64", "--option", "mlp_width=8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # an option that changes the architecture meets the weights' shapes
    assert "does not fit the PosGen config" in err and "pixel_mlp.0.weight [16, " in err and "!= [8, " in err


def test_export_records_both_resolutions(engines):
    one = Manifest.read(engines / "demo-32x64-fp16.json")
    two = Manifest.read(engines / "demo-32x64-out64x128-fp16.json")
    assert one.output_resolution == one.resolution == (32, 64)
    assert two.resolution == (32, 64) and two.output_resolution == (64, 128)
    assert {s.shape for s in two.input_specs} == {(1, 1, 32, 64)} and two.output_spec.shape == (1, 64, 128, 3)
    data = json.loads((engines / "demo-32x64-out64x128-fp32.json").read_text())
    assert data["output_resolution"] == [64, 128] and data["parity"]["max_abs"] <= 1
    assert two.parity.psnr_db >= 45


def test_the_runtime_paints_at_the_output_resolution(engines):
    ids = street_layout(32, 64, seed=3)
    with runtime.load(engines / "demo-32x64-out64x128-fp32.onnx") as synth:
        assert synth.output_resolution == (64, 128)
        assert synth(ids).shape == (64, 128, 3)
        assert synth(street_layout(64, 128, seed=3)).shape == (128, 256, 3)  # "input" size scaled alike
        assert synth(street_layout(64, 128, seed=3), output_size="engine").shape == (64, 128, 3)
    with load_reference(engines / "demo-32x64-out64x128-fp32.onnx") as reference:
        with runtime.load(engines / "demo-32x64-out64x128-fp32.onnx") as synth:
            assert np.abs(reference(ids).astype(int) - synth(ids).astype(int)).max() <= 1


def test_crn_run_reports_the_picture_size_and_crn_bench_compares_there(engines, tmp_path, capsys):
    artifact = str(engines / "demo-32x64-out64x128-fp16.onnx")
    assert run_main([artifact, "--input", "synthetic", "--frames", "2", "--output", str(tmp_path / "f"),
                     "--output-size", "engine", "--resize", "letterbox"]) == 0
    assert "takes 32x64 label maps and paints 64x128 pictures" in capsys.readouterr().out
    report = tmp_path / "bench.json"
    assert bench_main([str(engines), "--warmup", "0", "--iterations", "1", "--duration", "0", "--samples", "2",
                       "--json", str(report), "--report", str(tmp_path / "report")]) == 0
    rows = {(r["resolution"], r["backend"], r["precision"]): r for r in json.loads(report.read_text())["rows"]}
    assert rows[("32x64>64x128", "onnxruntime-cpu", "fp16")]["parity"]["psnr_db"] >= 45
    assert rows[("32x64>64x128", "onnxruntime-cpu", "fp32")]["parity"]["max_abs"] <= 1
    assert ("32x64>64x128", "torch-cpu", "fp32") in rows and ("32x64", "torch-cpu", "fp32") in rows


def test_out_res_is_refused_for_families_that_paint_at_the_label_size(tmp_path, capsys):
    assert export_main(["--preset", "spade-tiny", "--random-weights", "--res", "32x64", "--out-res", "64x128",
                        "--out", str(tmp_path)]) == 2
    assert "--out-res is for families with a pixel-wise head" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        export_main(["--preset", "posgen-tiny", "--random-weights", "--res", "32x64", "--res", "64x128",
                     "--out-res", "64x128", "--out", str(tmp_path)])
    assert stopped.value.code == 2 and "give one --out-res per --res" in capsys.readouterr().err
