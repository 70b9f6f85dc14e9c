import json
from pathlib import Path

import cv2
import pytest

from crn_deploy.cli.demo import main as demo_main
from crn_deploy.cli.export import main as export_main


@pytest.mark.slow
def test_demo_exports_synthesizes_and_benchmarks(tmp_path):
    assert demo_main(["--preset", "tiny", "--engines", str(tmp_path / "e"), "--out", str(tmp_path / "o")]) == 0
    stem = tmp_path / "o" / "demo-random-tiny-seed0"  # random weights: beside the trained demo's files, not over
    video = cv2.VideoCapture(f"{stem}.mp4")
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 30 and video.get(cv2.CAP_PROP_FRAME_WIDTH) == 128  # side by side
    picture = cv2.imread(f"{stem}.png")
    assert picture.shape == (32, 128, 3)  # label map | synthesized, at tiny's native 32x64
    assert not (tmp_path / "o" / "demo.png").exists()
    rows = json.loads(Path(f"{stem}-bench.json").read_text())["rows"]
    assert {r["backend"] for r in rows} == {"onnxruntime-cpu", "torch-cpu"}
    assert all(r["status"] == "ok" for r in rows)


def test_recipes_are_argument_files(tmp_path):
    recipe = tmp_path / "r.args"
    recipe.write_text("--res\n32x64\n--res\n64x64\n--precision\nfp32\n")
    argv = ["--preset", "tiny", "--random-weights", f"@{recipe}", "--out", str(tmp_path / "e")]
    assert export_main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "e").glob("*.onnx")) == [
        "tiny-seed0-32x64-fp32.onnx", "tiny-seed0-64x64-fp32.onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["pix2pixhd-tiny", "spade-tiny", "posgen-tiny"])
def test_the_demo_runs_with_any_familys_preset(tmp_path, preset):
    assert demo_main(["--preset", preset, "--frames", "3", "--engines", str(tmp_path / "e"),
                      "--out", str(tmp_path / "o")]) == 0
    stem = tmp_path / "o" / f"demo-random-{preset}-seed0"
    rows = json.loads(Path(f"{stem}-bench.json").read_text())["rows"]
    assert {r["precision"] for r in rows if r["backend"] == "onnxruntime-cpu"} == {"fp32", "fp16"}
    assert cv2.imread(f"{stem}.png").shape[1] == 2 * 64  # label map | picture, at 32x64


@pytest.mark.slow
def test_the_demo_runs_on_an_official_pix2pixhd_checkpoint(tmp_path):
    import torch

    from crn_deploy.families import find_preset
    from crn_deploy.models.checkpoint import random_model

    model = random_model(find_preset("pix2pixhd-tiny")[1], seed=2).model
    torch.save(model.state_dict(), tmp_path / "latest_net_G.pth")  # as the official trainer saves it
    assert demo_main(["--checkpoint", str(tmp_path / "latest_net_G.pth"), "--frames", "2",
                      "--engines", str(tmp_path / "e"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "demo.png").is_file()
