import importlib.util
import json
import os
import re

import pytest
import torch

from crn_deploy.models.crn import CRN, random_init
from crn_deploy.cli.export import main as export_main
from crn_deploy.families.crn import RELEASED_PRESETS
from crn_deploy.families import find_preset
from crn_deploy.manifest import Manifest

from .conftest import export_tiny

pytestmark = pytest.mark.numerics  # float rounding could move these verdicts: CI reruns them (pyproject)


def test_export_writes_onnx_and_manifest_per_resolution_and_precision(tmp_path, capsys):
    out = tmp_path / "engines"
    argv = ["--preset", "tiny", "--random-weights", "--seed", "2", "--res", "64x96", "--res", "32x128",
            "--precision", "fp32", "--precision", "fp16", "--out", str(out)]
    assert export_main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    engines = ("rtx.engine",) if importlib.util.find_spec("tensorrt_rtx") else ()  # built where a builder is here
    assert names == sorted(f"tiny-seed2-{r}-{p}.{ext}" for r in ("64x96", "32x128")
                           for p in ("fp32", "fp16") for ext in ("onnx", "json", *engines))
    assert "Next: crn-bench" in capsys.readouterr().out
    data = json.loads((out / "tiny-seed2-32x128-fp16.json").read_text())
    assert data["inputs"] == [{"name": "labels", "dtype": "uint8", "shape": [1, 1, 32, 128]}]
    assert data["outputs"] == [{"name": "image", "dtype": "uint8", "shape": [1, 32, 128, 3]}]
    assert data["source"]["kind"] == "random" and data["source"]["seed"] == 2
    assert data["onnx"]["opset"] == 17 and len(data["onnx"]["sha256"]) == 64
    assert set(data["parity"]) >= {"max_abs", "mean_abs", "psnr_db", "frac_off_gt2"}
    assert data["parity"]["psnr_db"] >= 40 and data["label_set"]["name"] == "cityscapes"
    assert {"torch", "onnx", "onnxruntime", "crn_deploy"} <= set(data["versions"])


def test_export_from_a_checkpoint_records_its_hash(tmp_path, tiny_config):
    torch.save({"model": random_init(CRN(tiny_config), 1).state_dict()}, tmp_path / "gen.pt")
    assert export_main([str(tmp_path / "gen.pt"), "--res", "32x64", "--out", str(tmp_path / "e"), "--batch", "2"]) == 0
    manifest = Manifest.read(tmp_path / "e" / "gen-32x64-fp16.json")
    assert manifest.batch == 2 and manifest.source.kind == "checkpoint"
    assert manifest.input_spec.shape == (2, 1, 32, 64)


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tiny", "--random-weights", "--res", "100x100"], "nearest valid: 96x96, 96x104, 104x96, 104x104"),
    (["--preset", "nope", "--random-weights"], "unknown preset 'nope'"),
    (["--random-weights"], "needs --preset"),
    ([], "give a CHECKPOINT"),
    (["--preset", "tiny", "--random-weights", "--res", "big"], "HEIGHTxWIDTH"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert _exit_code(lambda: export_main([*argv, "--out", str(tmp_path)])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _exit_code(run) -> int:
    """argparse exits for its own errors; ours return the code."""
    try:
        return run()
    except SystemExit as e:
        return e.code


def test_input_errors_exit_2_without_traceback(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "Traceback" not in err
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    assert export_main([str(tmp_path / "junk.pt"), "--out", str(tmp_path)]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: permissions cannot make a folder unwritable")
def test_unwritable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert export_main(["--preset", "tiny", "--random-weights", "--out", str(locked)]) == 2
    assert "not writable" in capsys.readouterr().err


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert export_main(["--preset", "tiny", "--random-weights", "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err


def test_failed_gate_keeps_nothing(tmp_path, capsys):
    out = tmp_path / "e"
    assert export_main(["--preset", "tiny", "--random-weights", "--out", str(out), "--min-psnr", "200"]) == 1
    captured = capsys.readouterr()
    refusal = [line for line in captured.err.splitlines() if "not kept" in line]
    assert len(refusal) == 1 and "(floor 200 dB, 4 levels); worst class " in refusal[0]
    assert re.search(r"worst class [\w ]+ \((\d+\.\d dB|identical), up to \d+ levels\)", refusal[0])
    assert "accept it with --min-psnr" in refusal[0] and "again with" not in captured.out  # CRN has no FP32 knob
    assert not out.exists()  # no artifact, no manifest, no temporary file, not even the folder it made
    out.mkdir()
    assert export_main(["--preset", "tiny", "--random-weights", "--out", str(out), "--min-psnr", "200"]) == 1
    assert list(out.iterdir()) == []  # a folder that was there stays


def test_an_fp16_posgen_below_the_floor_keeps_more_in_fp32_block_by_block_then_names_its_worst_class(
        tmp_path, capsys):
    """From the config's FP32 tail (here 2 blocks) one more block each time, up to the whole trunk (7 blocks),
    then refused; on a picture larger than its label map, whose worst class is read at the picture's size."""
    out = tmp_path / "e"
    assert export_main(["--preset", "posgen-tiny", "--random-weights", "--res", "32x64", "--out-res", "64x128",
                        "--precision", "fp16", "--option", "fp32_tail_blocks=2", "--max-abs", "0", "--out",
                        str(out)]) == 1
    captured = capsys.readouterr()
    tries = re.findall(r"below the floor; again with the trunk's last (\d) block\(s\) in FP32", captured.out)
    assert tries == ["3", "4", "5", "6", "7"]
    printed = re.findall(r"max \|Δ\| (\d+), mean \|Δ\| [\d.]+, PSNR ([\d.]+) dB: below the floor", captured.out)
    assert len(printed) == 6  # every try is said, the last one too
    refusal = [line for line in captured.err.splitlines() if "not kept" in line]
    assert len(refusal) == 1 and "floor 55 dB, 0 levels); worst class " in refusal[0]
    best = max(printed, key=lambda t: (float(t[1]), -int(t[0])))  # the refusal gives the best try's figures
    assert f"reaches at best {best[1]} dB, up to {best[0]} levels" in refusal[0] and "best of 6 tries" in refusal[0]
    assert refusal[0].endswith("Export fp32, or accept it with --max-abs " + refusal[0].split("up to ")[1].split()[0])
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", RELEASED_PRESETS)
def test_every_released_preset_exports_in_both_precisions(tmp_path, name):
    from crn_deploy.models.checkpoint import random_model

    config = find_preset(name)[1]
    smallest = (config.scale, config.scale)  # base 1x1: the cheapest valid size
    manifests = export_tiny(random_model(config, 0, name), tmp_path, resolutions=[smallest], name=name)
    by_precision = {m.precision: m.parity.to_dict() for m in manifests}
    assert by_precision["fp32"]["max_abs"] <= 1
    assert by_precision["fp16"]["psnr_db"] >= 55 and by_precision["fp16"]["max_abs"] <= 4


def test_no_instance_is_refused_for_models_without_an_instance_input(tmp_path, capsys):
    from crn_deploy.cli.export import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "tiny", "--random-weights", "--no-instance", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--no-instance applies to models with an instance input" in \
        capsys.readouterr().err


def test_a_re_export_keeps_the_engines_of_the_same_onnx_and_removes_those_of_another(tmp_path, capsys):
    """crn-demo and crn-export rewrite a manifest: an engine built from the previous artifact stays recorded where
    the new ONNX is the same file, and is removed (not left orphaned) where it is not."""
    from crn_deploy.targets import RTX

    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds the engine (the rtx extra)")
    out = tmp_path / "e"
    common = ["--preset", "tiny", "--random-weights", "--precision", "fp32", "--name", "m", "--out", str(out)]
    assert export_main([*common, "--target", "rtx"]) == 0
    engine = out / "m-32x64-fp32.rtx.engine"
    assert engine.is_file() and Manifest.read(out / "m-32x64-fp32.json").engine_record(RTX) is not None
    assert export_main([*common, "--no-engine"]) == 0  # the same weights: the same ONNX, byte for byte
    assert engine.is_file() and Manifest.read(out / "m-32x64-fp32.json").engine_record(RTX).file == engine.name
    capsys.readouterr()
    assert export_main([*common, "--no-engine", "--seed", "1"]) == 0  # other weights under the same name
    assert not engine.exists() and Manifest.read(out / "m-32x64-fp32.json").engine_record(RTX) is None
    assert f"removed {engine.name}, built from the artifact this export replaces" in capsys.readouterr().out
