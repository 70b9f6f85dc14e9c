"""SPADE through the whole pipeline: training runs written the way NVlabs/SPADE's trainer writes them
(latest_net_G.pth with spectral-norm metadata and batch-norm statistics, opt.txt beside it), normal
and more upsampling, with and without the VAE -> crn-export (family recognised from the keys, the
rest from opt.txt) -> the runtime with style vectors, crn-run, crn-bench."""

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from crn_deploy import runtime
from crn_deploy.cli.bench import main as bench_main
from crn_deploy.cli.export import main as export_main
from crn_deploy.cli.run import main as run_main
from crn_deploy.data.synthetic import cityscapes_scene
from crn_deploy.errors import UsageError
from crn_deploy.families import find_preset
from crn_deploy.manifest import Manifest
from crn_deploy.models.checkpoint import load_checkpoint

from .spade_official import write_run

pytestmark = pytest.mark.numerics  # float rounding could move these verdicts: CI reruns them (pyproject)

TINY = find_preset("spade-tiny")[1]
RUNS = {"normal": (TINY, (64, 128)),
        "more-vae": (replace(TINY, use_vae=True, z_dim=8, num_upsampling_layers="more", crop_size=128), None)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (checkpoint, artifacts folder) for each training run, exported fp32 and fp16."""
    root = tmp_path_factory.mktemp("spade")
    found = {}
    for name, (config, res) in RUNS.items():
        checkpoint = write_run(root / "checkpoints" / name, config, seed=len(found) + 1)
        out = root / "engines"
        argv = [str(checkpoint), "--precision", "fp32", "--precision", "fp16", "--out", str(out), "--name", name,
                *(["--res", f"{res[0]}x{res[1]}"] if res else [])]
        assert export_main(argv) == 0
        found[name] = checkpoint, out
    return found


def test_the_export_says_which_opt_txt_it_read(exported, tmp_path, capsys):
    checkpoint = exported["normal"][0]
    assert export_main([str(checkpoint), "--precision", "fp32", "--out", str(tmp_path), "--no-engine"]) == 0
    assert f"the training run's options from {(checkpoint.parent / 'opt.txt').resolve()}" in capsys.readouterr().out


def _manifest(exported, name, precision):
    out = exported[name][1]
    return Manifest.read(next(out.glob(f"{name}-*-{precision}.json")))


@pytest.mark.parametrize("name", list(RUNS))
def test_export_recognises_spade_records_its_inputs_and_passes_the_gates(exported, name):
    config, res = RUNS[name]
    fp16, fp32 = _manifest(exported, name, "fp16"), _manifest(exported, name, "fp32")
    assert fp16.family_name == "spade" and fp16.config == config
    assert tuple(fp16.resolution) == (res or config.native_resolution)
    names = [(s.name, s.dtype) for s in fp16.input_specs]
    assert names == [("labels", "uint8"), ("instances", "int32"), *([("z", "float32")] if config.use_vae else [])]
    assert fp32.parity.max_abs <= 1  # against the PyTorch FP32 reference
    assert fp16.parity.psnr_db >= 45
    options = exported[name][0].parent / "opt.txt"  # read by itself, and recorded as what the export read
    assert fp16.source.options_file == str(options.resolve())


def test_the_runtime_holds_a_style_across_frames_and_takes_one_per_call(exported):
    checkpoint, out = exported["more-vae"]
    config = RUNS["more-vae"][0]
    labels, instances = cityscapes_scene(*config.native_resolution, seed=40)
    model = load_checkpoint(checkpoint).model
    z = np.linspace(-1, 1, config.z_dim, dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(labels)[None, None], torch.from_numpy(instances)[None, None],
                         torch.from_numpy(z)[None])[0].numpy()
    artifact = next(out.glob("more-vae-*-fp32.onnx"))
    with runtime.load(artifact, style_seed=5) as synth:
        first, again = synth(labels, instances=instances), synth(labels, instances=instances)
        assert np.array_equal(first, again)  # the style holds from frame to frame
        given = synth(labels, instances=instances, z=z)
        assert np.abs(given.astype(int) - expected.astype(int)).max() <= 1
        assert not np.array_equal(given, first)  # the style is an input, not a constant
        batch = synth(np.stack([labels, labels]), instances=np.stack([instances, instances]),
                      z=np.stack([z, -z]))
        assert np.array_equal(batch[0], given) and not np.array_equal(batch[1], given)
        synth.set_style(z)
        assert np.array_equal(synth(labels, instances=instances), given)
        with pytest.raises(UsageError, match=r"z must be \[8\] or \[1, 8\]"):
            synth(labels, instances=instances, z=np.zeros(7, np.float32))
    with runtime.load(artifact, style_seed=6) as other:
        assert not np.array_equal(other(labels, instances=instances), first)
    with runtime.load(next(out.glob("normal-*-fp32.onnx"))) as plain:
        with pytest.raises(UsageError, match="takes no style vector"):
            plain(labels[:64, :128], instances=instances[:64, :128], z=z)


def test_crn_run_and_crn_bench_serve_spade(exported, tmp_path):
    out = exported["normal"][1]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert run_main([str(next(out.glob("more-vae-*-fp16.onnx"))), "--input", "synthetic", "--frames", "2",
                         "--output", str(tmp_path / name), "--style-seed", seed]) == 0
    frames = {n: cv2.imread(str(tmp_path / n / "frame_000000.png")) for n in "abc"}
    assert np.array_equal(frames["a"], frames["b"]) and not np.array_equal(frames["a"], frames["c"])
    report = tmp_path / "bench.json"
    assert bench_main([str(out), "--warmup", "0", "--iterations", "2", "--duration", "0", "--samples", "2",
                       "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    artifacts = {(r["artifact"], r["backend"]): r for r in rows}
    for name in RUNS:
        fp16 = next(r for (a, b), r in artifacts.items() if a.startswith(f"{name}-") and a.endswith("fp16.onnx"))
        assert fp16["parity"]["psnr_db"] >= 45 and fp16["parity"]["reference"].startswith("torch")
    assert sum(1 for r in rows if r["backend"] == "torch-cpu") == 2  # each model's own reference
