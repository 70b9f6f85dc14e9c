"""SPADE's reference generator against an independent NumPy forward written from the official code,
on checkpoints written the way the official trainer writes them (spectral norm's stored u/v, batch-norm
running statistics, opt.txt); the ONNX graphs against the reference; what the checkpoint reader refuses."""

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
from pathlib import Path

import pytest
import torch
from onnx import TensorProto

from crn_deploy.graph import assemble, graph_dtypes
from crn_deploy.data.synthetic import patchwork_scene
from crn_deploy.errors import CheckpointError, UsageError
from crn_deploy.families import FAMILIES, config_fields_from_options, draw_styles, find_preset
from crn_deploy.families.spade import SPADEConfig
from crn_deploy.labels import ADE20K, COCO_STUFF, ade20k_annotation_to_ids
from crn_deploy.measure.parity import compare_images
from crn_deploy.models import shared, spade, spade_trunk
from crn_deploy.models.checkpoint import load_checkpoint
from crn_deploy.models.state import read_opt_file
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes
from crn_deploy.models.registry import LoadRequest

from . import reference_spade_numpy as ref
from . import tensorrt_parser
from .spade_official import numpy_state, official_state, write_run

REQUEST = LoadRequest(Path("checkpoint"))
TINY = find_preset("spade-tiny")[1]  # normal upsampling, spectral sync-batch 3x3, 35 labels + instances
CONFIGS = {
    "normal": TINY,
    "more-dontcare": replace(TINY, num_upsampling_layers="more", crop_size=128, label_nc=20,
                             contain_dontcare_label=True, instances=False),
    "most-instance-5x5": replace(TINY, num_upsampling_layers="most", crop_size=256, aspect_ratio=2.0,
                                 norm_G="spectralspadeinstance5x5"),
    "vae": replace(TINY, use_vae=True, z_dim=8),
    "vae-more": replace(TINY, use_vae=True, z_dim=8, num_upsampling_layers="more", crop_size=128),
}


def _inputs(config, count=1, seed=5, resolution=None):
    h, w = resolution or config.native_resolution
    pairs = [patchwork_scene(h, w, config.label_nc + config.contain_dontcare_label, seed + i) for i in range(count)]
    ids = np.stack([p[0] for p in pairs])[:, None]
    ids[:, :, :3, :5] = 255  # the loader's "unknown": the don't-care channel where there is one
    instances = np.stack([p[1] for p in pairs])[:, None]
    z = draw_styles(count, config.z_dim, seed) if config.use_vae else None
    return ids, instances, z


def _arrays(config, ids, instances, z):
    return [ids, *([instances] if config.instances else []), *([z] if config.use_vae else [])]


def _numpy_picture(config, state, ids, instances, z, i=0):
    return ref.synthesize(numpy_state(state), ids[i, 0], instances[i, 0], label_nc=config.label_nc,
                          dontcare=config.contain_dontcare_label, instances=config.instances, ngf=config.ngf,
                          up_layers=config.up_layers, norm=config.param_free_norm,
                          z=None if z is None else z[i].astype(np.float64))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reference_model_from_an_official_checkpoint_matches_the_numpy_forward(name):
    config = CONFIGS[name]
    state = official_state(config, seed=2)
    model = spade.load_state(state, config, REQUEST)
    ids, instances, z = _inputs(config)
    with torch.no_grad():
        got = model(*(torch.from_numpy(a) for a in _arrays(config, ids, instances, z)))[0].numpy()
    expected = _numpy_picture(config, state, ids, instances, z)
    assert got.shape == (*config.native_resolution, 3)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # truncation: only values at a level boundary move
    assert 10 < expected.std() < 110  # a picture, neither flat nor saturated


def test_spectral_norm_uses_the_stored_vectors_not_the_converged_singular_value():
    state = official_state(TINY, seed=3)
    weight, u, v = (state[f"up_1.conv_0.weight_{s}"] for s in ("orig", "u", "v"))
    stored_sigma = torch.dot(u, weight.reshape(weight.shape[0], -1) @ v)
    true_sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
    assert abs(stored_sigma - true_sigma) / true_sigma > 1e-3  # a few power iterations: not converged
    folded = shared.fold_spectral_norm(state)
    assert torch.allclose(folded["up_1.conv_0.weight"], weight / stored_sigma)
    assert "up_1.conv_0.weight_u" not in folded and "up_1.conv_s.weight" in folded


# the ONNX graph -------------------------------------------------------------------------------
def _graph(config, model, precision, batch=1, resolution=None):
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    sizes = Sizes.same(resolution or config.native_resolution)
    return assemble(*spade.graph_parts(config, weights, sizes, as_precision(precision), batch))


def _onnx_run(graph, arrays):
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["image"], dict(zip([i.name for i in session.get_inputs()], arrays, strict=True)))[0]


def _reference(model, arrays):
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in arrays)).numpy()


@pytest.mark.parametrize("name, batch", [("normal", 2), ("more-dontcare", 1), ("most-instance-5x5", 1),
                                         ("vae", 2), ("vae-more", 1)])
@pytest.mark.numerics
def test_fp32_graph_matches_the_reference_to_one_level_and_fp16_reaches_45_db(name, batch):
    config = CONFIGS[name]
    model = spade.load_state(official_state(config, seed=4), config, REQUEST)
    arrays = _arrays(config, *_inputs(config, batch, seed=11))
    expected = _reference(model, arrays)
    fp32 = _graph(config, model, "fp32", batch)
    onnx.checker.check_model(fp32, full_check=True)
    got = _onnx_run(fp32, arrays)
    assert got.shape == (batch, *config.native_resolution, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    parity = compare_images(_onnx_run(_graph(config, model, "fp16", batch), arrays), expected)
    assert parity.psnr_db >= 45


def test_a_resolution_other_than_the_crop_computes_what_the_official_code_does_with_that_crop():
    model = spade.load_state(official_state(TINY, seed=6), TINY, REQUEST)
    ids, instances, _ = _inputs(TINY, 1, seed=12, resolution=(64, 96))
    expected = ref.synthesize(numpy_state(model.state_dict()), ids[0, 0], instances[0, 0], label_nc=35,
                              dontcare=False, instances=True, ngf=TINY.ngf, up_layers=5)
    got = _onnx_run(_graph(TINY, model, "fp32", resolution=(64, 96)), [ids, instances])[0]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(UsageError, match="--use_vae.*--res 32x64"):
        FAMILIES["spade"].check_resolution((64, 96), CONFIGS["vae"])
    with pytest.raises(UsageError, match="multiple of 32"):
        FAMILIES["spade"].check_resolution((48, 96), TINY)


def test_the_segmentation_resizes_are_torch_legacy_nearest_and_the_check_can_tell():
    """Resize attributes decide which label pixel each block sees: asymmetric + floor is torch's
    'nearest'; half_pixel (PIL's and OpenCV's rule) picks other pixels and the picture moves."""
    model = spade.load_state(official_state(TINY, seed=7), TINY, REQUEST)
    arrays = _arrays(TINY, *_inputs(TINY, 1, seed=13))
    graph = _graph(TINY, model, "fp32")
    resizes = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert {(a.name, a.s) for n in resizes for a in n.attribute} == {
        ("mode", b"nearest"), ("coordinate_transformation_mode", b"asymmetric"), ("nearest_mode", b"floor")}
    assert sum(1 for n in resizes if len(n.input) > 3) == 5  # one per size below the full map
    for node in resizes:
        for attribute in node.attribute:
            if attribute.name == "coordinate_transformation_mode":
                attribute.s = b"half_pixel"
    moved = np.abs(_onnx_run(graph, arrays).astype(int) - _reference(model, arrays).astype(int))
    assert moved.max() > 8


def test_fp16_graph_keeps_batch_norm_statistics_in_fp32_and_convolutions_in_fp16():
    config = CONFIGS["vae"]
    graph = _graph(config, spade.load_state(official_state(config), config, REQUEST), "fp16", batch=2)
    types = graph_dtypes(graph)
    norms = [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    assert len(norms) == 2 * 7 + 4  # norm_0, norm_1 per block, norm_s where the width changes (4 blocks)
    assert all(types[n.input[0]] == TensorProto.FLOAT for n in norms)
    for node in graph.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert types[node.input[0]] == TensorProto.FLOAT16, node.name
    modulations = [n for n in graph.graph.node if n.op_type == "Mul" and types[n.input[0]] == TensorProto.FLOAT16]
    assert len(modulations) == len(norms)  # normalized * (1 + gamma) in FP16
    assert types["z"] == TensorProto.FLOAT  # the style comes in as float32 and is cast inside


@pytest.mark.parametrize("name, precision", [("normal", "fp16"), ("vae", "fp16"), ("most-instance-5x5", "fp32")])
def test_graphs_stay_inside_what_the_tensorrt_onnx_parser_accepts(name, precision):
    config = CONFIGS[name]
    graph = _graph(config, spade.load_state(official_state(config), config, REQUEST), precision, batch=2)
    assert tensorrt_parser.problems(graph) == []
    bad = onnx.ModelProto()
    bad.CopyFrom(graph)
    resize = next(n for n in bad.graph.node if n.op_type == "Resize" and len(n.input) > 3)
    bad.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 1, 3, 3], np.int64), "bad_sizes"))
    # a resize that changes the batch and channel counts, and a cubic one: outside the parser's support
    bad.graph.node.append(onnx.helper.make_node("Resize", [resize.input[0], "", "", "bad_sizes"], ["unused"]))
    next(a for a in resize.attribute if a.name == "mode").s = b"cubic"
    found = tensorrt_parser.problems(bad)
    assert sum("resize" in p for p in found) == 2, found


def test_no_constant_grows_with_the_resolution():
    model = spade.load_state(official_state(TINY), TINY, REQUEST)
    sizes = [sorted(int(np.prod(i.dims)) for i in _graph(TINY, model, "fp16", resolution=res).graph.initializer)
             for res in ((32, 64), (128, 256))]
    assert sizes[0] == sizes[1]


# checkpoints and options ----------------------------------------------------------------------
def test_opt_txt_beside_the_checkpoint_gives_what_the_weights_do_not(tmp_path):
    config = CONFIGS["more-dontcare"]
    path = write_run(tmp_path / "run", config, seed=1)
    parsed = read_opt_file(tmp_path / "run" / "opt.txt")
    assert parsed["ngf"] == "4" and parsed["num_upsampling_layers"] == "more"  # "[default: 64]" dropped
    loaded = load_checkpoint(path)  # the family from the keys, the rest from opt.txt
    assert loaded.family == "spade" and loaded.config == config
    assert loaded.label_set.num_classes == 21 and loaded.label_set.name == "classes-21"


def test_what_neither_weights_nor_options_say_is_refused_with_the_option_to_pass(tmp_path):
    path = write_run(tmp_path / "bare", TINY, with_opt=False)
    with pytest.raises(UsageError, match="num_upsampling_layers \\(normal or more\\).*--opt.*--preset.*"
                                         "--option num_upsampling_layers=normal\\|more"):
        load_checkpoint(path)
    with pytest.raises(UsageError, match="36 input channels.*label_nc, contain_dontcare_label, no_instance unknown"):
        load_checkpoint(path, options={"num_upsampling_layers": "normal"})
    options = {"num_upsampling_layers": "normal", "label_nc": "35", "contain_dontcare_label": "False",
               "no_instance": "False"}
    assert load_checkpoint(path, options=options).config == replace(TINY, crop_size=512, aspect_ratio=1.0)
    with pytest.raises(CheckpointError, match="does not fit the SPADE config.*wrong shape"):
        load_checkpoint(path, options={**options, "label_nc": "34"})  # 34 + instances: one channel short
    vae = write_run(tmp_path / "vae", CONFIGS["vae"], with_opt=False)
    with pytest.raises(UsageError, match="use_vae.*crop_size and aspect_ratio"):
        load_checkpoint(vae, options=options)
    with pytest.raises(UsageError, match="option no_instance='maybe' is not a valid bool"):
        config_fields_from_options(SPADEConfig, {"no_instance": "maybe"}, "--option")


def test_keys_of_other_families_and_spade_parts_are_told_apart(tmp_path):
    state = official_state(TINY)
    assert spade.recognises(state) and spade.recognises({f"module.{k}": v for k, v in state.items()})
    discriminator = {"model0.0.weight": torch.zeros(1), "model1.0.weight": torch.zeros(1)}
    assert not spade.recognises(discriminator)
    with pytest.raises(CheckpointError, match="not a SPADE generator.*not the discriminator"):
        spade.load_state(discriminator, None, LoadRequest(Path("latest_net_D.pth")))


def test_the_released_architectures_have_the_official_key_counts():
    """docs/families/spade.md: the Cityscapes model's key layout (spectral norm metadata on every block conv)."""
    config = find_preset("spade_cityscapes")[1]
    with torch.device("meta"):
        model = spade_trunk.SPADEGenerator(config)
    assert config.native_resolution == (256, 512) and config.start_size((256, 512)) == (4, 8)
    assert model.fc.weight.shape == (1024, 36, 3, 3) and model.conv_img.weight.shape == (3, 64, 3, 3)
    assert model.head_0.norm_0.mlp_shared[0].weight.shape == (128, 36, 3, 3)
    assert find_preset("spade_ade20k")[1].native_resolution == (256, 256)


# label sets ----------------------------------------------------------------------------------
def test_label_sets_and_palettes_are_spades():
    assert ADE20K.num_classes == 151 and ADE20K.names[0] == "wall" and ADE20K.names[149] == "flag"
    assert COCO_STUFF.num_classes == 183 and COCO_STUFF.names[0] == "person" and COCO_STUFF.names[181] == "wood"
    # util.labelcolormap: class 0 is id 1's colour, the bits of the id dealt to R, G, B
    assert ADE20K.colors[:4] == ((128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128))
    assert ADE20K.colors[7] == (64, 0, 0)  # id 8: its fourth bit is R's second bit
    assert COCO_STUFF.colors[COCO_STUFF.names.index("sky-other")] == (95, 219, 255)
    assert list(ade20k_annotation_to_ids(np.array([0, 1, 150], np.uint8))) == [150, 0, 149]
    for preset, expected in (("spade_cityscapes", "cityscapes-labelids"), ("spade_ade20k", "ade20k"),
                             ("spade_coco", "coco-stuff")):
        assert FAMILIES["spade"].label_set_for(find_preset(preset)[1]).name == expected
