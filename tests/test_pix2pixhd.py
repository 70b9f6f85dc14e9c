"""pix2pixHD's reference generator against an independent NumPy forward written from the official code,
and official-format checkpoints (the state_dict the official trainer saves) read back with their
architecture inferred."""

import numpy as np
import onnx
import onnxruntime as ort
from pathlib import Path

import pytest
import torch
from onnx import TensorProto

from crn_deploy.graph import assemble, graph_dtypes
from crn_deploy.data.synthetic import cityscapes_scene
from crn_deploy.errors import CheckpointError, UsageError
from crn_deploy.families import FAMILIES, find_preset
from crn_deploy.families.pix2pixhd import Pix2PixHDConfig
from crn_deploy.measure.parity import compare_images
from crn_deploy.models import pix2pixhd as p2p
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes
from crn_deploy.models.registry import LoadRequest

from . import reference_pix2pixhd_numpy as ref
from .pix2pixhd_official import official_state
from . import tensorrt_parser

GLOBAL = Pix2PixHDConfig(label_nc=35, ngf=4, n_downsample_global=2, n_blocks_global=2)
CONFIGS = {"global": GLOBAL, "local": find_preset("pix2pixhd-tiny")[1],
           "no-instances": Pix2PixHDConfig(label_nc=35, instances=False, ngf=4, n_downsample_global=2,
                                               n_blocks_global=1)}
RES = (32, 64)


def _model(config, seed=0):
    return p2p.random_init(p2p.Pix2PixHDGenerator(config), seed).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reference_model_matches_the_numpy_forward_of_the_official_code(name):
    config = CONFIGS[name]
    model = _model(config)
    labels, instances = cityscapes_scene(*RES, seed=1)
    weights = {k: v.double().numpy() for k, v in model.state_dict().items()}
    expected = ref.generator(ref.encode(labels, instances, config.label_nc, config.instances), weights,
                             config.n_downsample_global, config.n_blocks_global, config.n_local_enhancers,
                             config.n_blocks_local)
    with torch.no_grad():
        x = model.encode(torch.from_numpy(labels)[None, None], torch.from_numpy(instances)[None, None])
        got = model.generate(x)[0].double().numpy()
        pictures = model(torch.from_numpy(labels)[None, None], torch.from_numpy(instances)[None, None])
    assert np.abs(got - expected).max() < 1e-4
    assert 0.2 < expected.std() < 1.0  # a picture, not a saturated or flat one
    diff = np.abs(pictures[0].numpy().astype(int) - ref.tensor2im(expected).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # truncation: only values at a level boundary move


def test_edges_mark_both_pixels_of_every_differing_pair():
    inst = np.zeros((5, 6), np.int32)
    inst[1:3, 2:4] = 26000
    edges = p2p.instance_edges(torch.from_numpy(inst)[None, None])[0, 0].numpy()
    assert np.array_equal(edges, ref.edges(inst))
    assert edges[1:3, 1:5].all() and edges[0:4, 2:4].all() and edges.sum() == 12 and edges[0, 0] == 0


def test_truncation_not_rounding():
    image = torch.tensor([-1.0, -0.999, 0.0, 0.9961, 1.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert p2p.to_uint8_images(image)[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255]


@pytest.mark.parametrize("name, keys", [("label2city_512p", 56), ("label2city_1024p", 74)])
def test_the_released_architectures_have_the_official_keys_and_are_inferred(name, keys):
    config = find_preset(name)[1]
    with torch.device("meta"):
        state = p2p.Pix2PixHDGenerator(config).state_dict()
    assert len(state) == keys  # docs/families/pix2pixhd.md: 56 keys for global, 74 for local
    assert all(k.startswith(("model.", "model1_1.", "model1_2.")) for k in state)
    assert p2p.infer_config(state) == config
    if config.n_local_enhancers:
        assert state["model1_2.3.weight"].shape == (64, 32, 3, 3)  # ConvTranspose: [C_in, C_out, k, k]


def test_a_checkpoint_of_another_shape_names_its_keys(tmp_path):
    state = official_state(CONFIGS["global"])
    state["model.1.weight"] = state["model.1.weight"][:, :10]
    head_bias = max((k for k in state if k.endswith(".bias")), key=lambda k: int(k.split(".")[1]))
    del state[head_bias]
    with pytest.raises(CheckpointError, match=f"missing: {head_bias}; wrong shape: model.1.weight"):
        p2p.load_state(state, CONFIGS["global"], LoadRequest(Path("checkpoint")))
    with pytest.raises(CheckpointError, match="not a pix2pixHD generator"):
        p2p.infer_config({"scale0_layer0.0.weight": torch.zeros(1)})


def test_sizes_must_be_multiples_of_the_downsampling():
    pix2pixhd = FAMILIES["pix2pixhd"]
    pix2pixhd.check_resolution((512, 1024), find_preset("label2city_512p")[1])
    with pytest.raises(UsageError, match="not a multiple of 32.*nearest valid: 512x992, 512x1024"):
        pix2pixhd.check_resolution((512, 1000), find_preset("label2city_1024p")[1])


# the ONNX graph -------------------------------------------------------------------------------
def _scenes(count, resolution, seed=10):
    scenes = [cityscapes_scene(*resolution, seed=seed + i) for i in range(count)]
    return np.stack([s[0] for s in scenes])[:, None], np.stack([s[1] for s in scenes])[:, None]


def _onnx_run(graph, labels, instances):
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"labels": labels, **({"instances": instances} if len(session.get_inputs()) == 2 else {})}
    return session.run(["image"], feeds)[0]


def _reference(model, labels, instances):
    with torch.no_grad():
        return model(torch.from_numpy(labels), torch.from_numpy(instances)).numpy()


@pytest.mark.parametrize("name, batch", [("global", 1), ("local", 2), ("no-instances", 1)])
def test_fp32_graph_matches_the_reference_to_one_level(name, batch):
    config = CONFIGS[name]
    model = _model(config, seed=3)
    graph = _graph(config, _numpy(model), RES, "fp32", batch)
    onnx.checker.check_model(graph, full_check=True)
    labels, instances = _scenes(batch, RES)
    got, expected = _onnx_run(graph, labels, instances), _reference(model, labels, instances)
    assert got.shape == (batch, *RES, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.numerics
def test_fp16_graph_reaches_45_db_with_fp32_instance_norm_statistics():
    config = find_preset("pix2pixhd-tiny")[1]
    model = _model(config, seed=4)
    graph = _graph(config, _numpy(model), (64, 128), "fp16", batch=2)
    labels, instances = _scenes(2, (64, 128))
    parity = compare_images(_onnx_run(graph, labels, instances), _reference(model, labels, instances))
    assert parity.psnr_db >= 45 and parity.max_abs <= 4
    types = graph_dtypes(graph)
    for node in graph.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            assert types[node.input[0]] == TensorProto.FLOAT16 and types[node.input[1]] == TensorProto.FLOAT16
        if node.op_type == "InstanceNormalization":
            assert types[node.input[0]] == TensorProto.FLOAT  # statistics over H*W in FP32


def test_no_constant_grows_with_the_resolution():
    config = find_preset("pix2pixhd-tiny")[1]
    weights = _numpy(_model(config))
    sizes = [sorted(int(np.prod(i.dims)) for i in _graph(config, weights, res, "fp16").graph.initializer)
             for res in ((32, 64), (128, 256))]
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("name, precision", [("local", "fp16"), ("global", "fp32"), ("no-instances", "fp16")])
def test_graphs_stay_inside_what_the_tensorrt_onnx_parser_accepts(name, precision):
    graph = _graph(CONFIGS[name], _numpy(_model(CONFIGS[name])), RES, precision, batch=2)
    assert tensorrt_parser.problems(graph) == []
    bad = onnx.ModelProto()
    bad.CopyFrom(graph)
    node = next(n for n in bad.graph.node if n.op_type == "Pad")
    node.attribute[0].s = b"edge"
    bad.graph.node.append(onnx.helper.make_node("Cast", [node.output[0]], ["as_uint8"], to=TensorProto.UINT8))
    bad.graph.node.append(onnx.helper.make_node("Relu", ["as_uint8"], ["relu_uint8"]))
    found = tensorrt_parser.problems(bad)  # the check itself can fail
    assert any("pad mode" in p for p in found) and any("takes UINT8" in p for p in found)


def _numpy(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_opt_txt_beside_the_checkpoint_says_no_instance_and_the_feature_encoder_is_refused(tmp_path):
    from crn_deploy.models.checkpoint import load_checkpoint
    from crn_deploy.files import sha256_file

    checkpoint = tmp_path / "latest_net_G.pth"
    torch.save(official_state(CONFIGS["no-instances"]), checkpoint)
    (tmp_path / "opt.txt").write_text("------------ Options -------------\nlabel_nc: 35\nno_instance: True\n"
                                      "instance_feat: False\n-------------- End ----------------\n")
    loaded = load_checkpoint(checkpoint)
    assert loaded.config.instances is False and loaded.config.label_nc == 35  # not 34 labels + an edge channel
    assert loaded.source["options_file"] == str((tmp_path / "opt.txt").resolve())  # the manifest says what it read
    assert loaded.source["options_sha256"] == sha256_file(tmp_path / "opt.txt")
    (tmp_path / "opt.txt").write_text("instance_feat: True\nno_instance: False\n")
    with pytest.raises(CheckpointError, match="feature encoder \\(--instance_feat\\)"):
        p2p.load_state(official_state(GLOBAL), None, LoadRequest(tmp_path / "latest_net_G.pth",
                                                                    {"instance_feat": "True"}))
    (tmp_path / "opt.txt").unlink()
    (tmp_path / "latest_net_E.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="latest_net_E.pth lies beside it"):
        p2p.load_state(official_state(GLOBAL), None, LoadRequest(tmp_path / "latest_net_G.pth"))


def _graph(config, weights, resolution, precision, batch=1):
    return assemble(*p2p.graph_parts(config, weights, Sizes.same(resolution), as_precision(precision), batch))
