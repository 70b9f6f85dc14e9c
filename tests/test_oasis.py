"""OASIS's reference generator against an independent NumPy forward written from the official code, on
checkpoints written the way the official trainer writes them (spectral norm's stored u/v on conv_0, conv_1 and
conv_s, first_norm running statistics, checkpoints/<name>/models/latest_EMA.pth beside <name>/opt.txt); the ONNX
graphs against the reference; what the checkpoint reader refuses; the whole path through crn-export, the
runtime with its noise, crn-run and crn-bench. The family arrived as its own two files: nothing here reaches
outside them but through the registry."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from crn_deploy import runtime
from crn_deploy.cli.bench import main as bench_main
from crn_deploy.cli.export import main as export_main
from crn_deploy.cli.run import main as run_main
from crn_deploy.data.synthetic import patchwork_scene
from crn_deploy.errors import CheckpointError, UsageError
from crn_deploy.families import FAMILIES, draw_styles, find_preset
from crn_deploy.graph import assemble
from crn_deploy.manifest import Manifest
from crn_deploy.measure.parity import compare_images
from crn_deploy.models import oasis
from crn_deploy.models.checkpoint import load_checkpoint
from crn_deploy.models.registry import LoadRequest, recognise
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes

from . import reference_oasis_numpy as ref
from . import tensorrt_parser
from .oasis_official import numpy_state, official_state, write_run

TINY = find_preset("oasis-tiny")[1]  # sync batch norm, 3D noise z[8], Cityscapes' 35 channels, 32x64
CONFIGS = {  # (config, the dataset whose loader maps its ids)
    "tiny": (TINY, "cityscapes"),
    # instance norm over a 1x2 start map is ill-conditioned (two pixels); official models start at 8x16 or more
    "instance-no-noise": (replace(TINY, param_free_norm="instance", no_3dnoise=True, crop_size=128), "cityscapes"),
    "coco-5x5": (replace(TINY, label_nc=182, shift_ids=True, spade_ks=5, aspect_ratio=1.0), "coco"),
    "ade20k": (replace(TINY, label_nc=150, aspect_ratio=1.0, crop_size=128), "ade20k"),
}
REQUEST = LoadRequest(Path("latest_EMA.pth"))


def _labels(config, dataset, seed=5):
    h, w = config.native_resolution
    ids, _ = patchwork_scene(h, w, config.label_nc, seed)
    if dataset == "coco":
        ids[:4, :6] = 255  # the file's unknown: channel 0
    return ids


def _z(config, seed=3):
    return None if config.no_3dnoise else draw_styles(1, config.z_dim, seed)


def _numpy(config, dataset, state, ids, z):
    return ref.synthesize(numpy_state(state), ids, dataset=dataset, semantic_nc=config.semantic_nc,
                          crop_size=config.crop_size, aspect_ratio=config.aspect_ratio,
                          norm="instance" if config.param_free_norm == "instance" else "batch",
                          z=None if z is None else z[0].astype(np.float64))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reference_model_from_an_official_checkpoint_matches_the_numpy_forward(name):
    config, dataset = CONFIGS[name]
    state = official_state(config, seed=1)
    assert len(state) == 208 if config.param_free_norm != "instance" else len(state) < 208
    model = oasis.load_state(state, config, REQUEST)
    ids, z = _labels(config, dataset), _z(config)
    with torch.no_grad():
        got = model(torch.from_numpy(ids)[None, None], *([] if z is None else [torch.from_numpy(z)]))[0].numpy()
    expected = _numpy(config, dataset, state, ids, z)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert 10 < expected.std() < 110  # a picture, not a flat field


def test_the_first_resize_keeps_the_official_height_and_width_order():
    """The official code's two swapped names cancel: resizing to (h, w) = (1, 2) at 32x64 paints a 32x64
    picture, as ours does; 'fixing' the names would start from (2, 1) and paint a transposed 64x32 one."""
    state = {k: v for k, v in numpy_state(official_state(TINY, seed=2)).items()
             if not k.endswith("num_batches_tracked")}
    ids, z = _labels(TINY, "cityscapes", seed=9), _z(TINY)
    seg = np.concatenate([np.broadcast_to(z[0, :, None, None], (TINY.z_dim, *ids.shape)),
                          ref.preprocess(ids, TINY.semantic_nc)])

    def trunk_from(start):
        x = ref.conv(ref.nearest(seg, start), state["fc.weight"], state["fc.bias"], pad=1)
        for i in range(6):
            x = ref.resblock(x, seg, state, f"body.{i}", "batch", norm_key="first_norm")
            x = x.repeat(2, axis=1).repeat(2, axis=2) if i < 5 else x
        return x

    assert TINY.start_size((32, 64)) == (1, 2)
    assert trunk_from((1, 2)).shape[1:] == (32, 64) and trunk_from((2, 1)).shape[1:] == (64, 32)


def _graph(config, model, precision, batch=1):
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    return assemble(*oasis.graph_parts(config, weights, Sizes.same(config.native_resolution), as_precision(precision),
                                       batch))


def _onnx_run(graph, feeds):
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["image"], {i.name: a for i, a in zip(session.get_inputs(), feeds, strict=True)})[0]


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_graph_matches_the_numpy_forward_to_one_level_and_fp16_reaches_45_db(name):
    config, dataset = CONFIGS[name]
    state = official_state(config, seed=4)
    model = oasis.load_state(state, config, REQUEST)
    ids = np.stack([_labels(config, dataset, seed=s) for s in (11, 12)])[:, None]
    z = None if config.no_3dnoise else draw_styles(2, config.z_dim, 6)
    feeds = [ids, *([] if z is None else [z])]
    expected = np.stack([_numpy(config, dataset, state, ids[i, 0], None if z is None else z[i : i + 1])
                         for i in range(2)])
    fp32 = _graph(config, model, "fp32", batch=2)
    assert compare_images(_onnx_run(fp32, feeds), expected).max_abs <= 1
    fp16 = _graph(config, model, "fp16", batch=2)
    assert compare_images(_onnx_run(fp16, feeds), expected).psnr_db >= 45
    assert tensorrt_parser.problems(fp16) == []
    assert [i.name for i in fp32.graph.input] == (["labels"] if config.no_3dnoise else ["labels", "z"])


def test_official_checkpoints_are_recognised_and_their_options_read_from_the_run(tmp_path):
    config = replace(TINY, crop_size=512)  # what the Cityscapes loader sets; the weights do not depend on it
    path = write_run(tmp_path / "checkpoints", config, "cityscapes")
    assert recognise(torch.load(path, weights_only=True)).name == "oasis"
    loaded = load_checkpoint(path)
    assert loaded.family == "oasis" and loaded.config == replace(TINY, crop_size=512, nhidden=TINY.nhidden)
    assert FAMILIES["oasis"].native_resolution(loaded.config) == (256, 512)
    assert loaded.label_set.name == "cityscapes-labelids"


def test_what_the_checkpoint_cannot_tell_is_refused_in_one_line_naming_what_to_pass(tmp_path):
    path = write_run(tmp_path / "checkpoints", TINY, None)  # no opt.txt
    with pytest.raises(UsageError, match=r"do not say how many are labels and how many noise.*--option "
                                         r"dataset_mode=cityscapes\|ade20k\|coco"):
        load_checkpoint(path)
    with_noise = load_checkpoint(path, options={"dataset_mode": "cityscapes"}).config
    assert not with_noise.no_3dnoise and with_noise.z_dim == 8  # 43 inputs = 35 labels + 8: the shapes settle it
    with pytest.raises(CheckpointError, match=r"fc takes 43 channels, but 35 labels and z_dim 64 make 99"):
        load_checkpoint(path, options={"dataset_mode": "cityscapes", "no_3dnoise": "False", "z_dim": "64"})
    with pytest.raises(CheckpointError, match="not an OASIS generator.*latest_EMA.pth, not the discriminator"):
        oasis.load_state({"body.0.norm_0.mlp_shared.0.weight": torch.zeros(1), "x": torch.zeros(1)}, None, REQUEST)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("oasis")
    path = write_run(root / "checkpoints", replace(TINY, crop_size=512), "cityscapes", seed=7)
    out = root / "engines"
    assert export_main([str(path), "--res", "32x64", "--precision", "fp32", "--precision", "fp16", "--out", str(out),
                        "--name", "oasis", "--no-engine"]) == 0
    return out


@pytest.mark.numerics
def test_export_records_the_noise_input_and_passes_the_gates(exported):
    manifest = Manifest.read(exported / "oasis-32x64-fp16.json")
    assert manifest.family_name == "oasis" and [s.name for s in manifest.input_specs] == ["labels", "z"]
    assert manifest.input_specs[1].shape == (1, 8) and manifest.parity.psnr_db >= 45
    assert Manifest.read(exported / "oasis-32x64-fp32.json").parity.max_abs <= 1


def test_the_runtime_holds_a_noise_drawn_from_a_seed_and_takes_one_per_call(exported):
    ids, _ = patchwork_scene(32, 64, 34, seed=21)
    with runtime.load(exported / "oasis-32x64-fp32.onnx", style_seed=4) as synth:
        first, again = synth(ids), synth(ids)
        given = synth(ids, z=np.ones(8, np.float32))
        synth.set_style(seed=5)
        other = synth(ids)
    assert np.array_equal(first, again) and not np.array_equal(first, given) and not np.array_equal(first, other)


def test_crn_run_with_a_style_seed_and_crn_bench(exported, tmp_path):
    out = tmp_path / "frames"
    assert run_main([str(exported / "oasis-32x64-fp16.onnx"), "--input", "synthetic", "--frames", "2",
                     "--style-seed", "3", "--output", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 2
    report = tmp_path / "bench.json"
    assert bench_main([str(exported), "--backend", "onnxruntime", "--backend", "torch", "--warmup", "0",
                       "--iterations", "1", "--duration", "0", "--samples", "2", "--json", str(report)]) == 0
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report.read_text())["rows"]}
    assert rows[("onnxruntime-cpu", "fp32")]["parity"]["max_abs"] <= 1
    assert rows[("onnxruntime-cpu", "fp16")]["parity"]["psnr_db"] >= 45
