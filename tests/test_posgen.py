"""PosGen: the reference model against an independent NumPy forward, the ONNX graphs (1x and 2x
output, FP32 and FP16, the MLP as 1x1 convolutions or MatMuls) against the reference, and that the
head really is pixel-wise."""


import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto

from crn_deploy.graph import assemble, graph_dtypes
from crn_deploy.data.synthetic import cityscapes_scene, patchwork_scene
from crn_deploy.families import FAMILIES, find_preset
from crn_deploy.measure.parity import compare_images
from crn_deploy.models import posgen
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes

from . import reference_posgen_numpy as ref
from . import tensorrt_parser

TINY = find_preset("posgen-tiny")[1]  # batch norm, Fourier coordinates, 32x64
CONFIGS = {"tiny": TINY,
           "xy-more-instance": TINY.with_options(dict(
               coordinate_encoding="xy", num_upsampling_layers="more", crop_size=128, norm_G="spadeinstance3x3",
               instances=False, contain_dontcare_label=True))}


def _model(config, seed=0):
    model = posgen.random_init(posgen.PosGenGenerator(config), seed).eval()
    with torch.no_grad():  # a wider spread of Fourier arguments than the init, as training would leave it
        model.fourier.weight.mul_(3.0)
    return model


def _scene(config, seed=5, count=1):
    h, w = config.native_resolution
    pairs = [cityscapes_scene(h, w, seed + i) for i in range(count)]
    ids, inst = np.stack([p[0] for p in pairs])[:, None], np.stack([p[1] for p in pairs])[:, None]
    return [ids, inst] if config.trunk.instances else [ids]


def _reference(model, arrays, out=None):
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in arrays), picture_size=out).numpy()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("scale", [1, 2])
def test_reference_model_matches_the_numpy_forward(name, scale):
    config = CONFIGS[name]
    model = _model(config, seed=1)
    arrays = _scene(config)
    h, w = config.native_resolution
    out = (h * scale, w * scale)
    got = _reference(model, arrays, out)[0]
    state = {k: v.double().numpy() for k, v in model.state_dict().items()}
    expected = ref.synthesize(state, arrays[0][0, 0], arrays[1][0, 0] if config.trunk.instances else None, config, out)
    assert got.shape == (*out, 3)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert 10 < expected.std() < 110


def _graph(config, model, precision, batch=1, out=None, head="conv"):
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    sizes = Sizes(config.native_resolution, out or config.native_resolution)
    return assemble(*posgen.graph_parts(config, weights, sizes, as_precision(precision), batch, head))


def _onnx_run(graph, arrays):
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["image"], dict(zip([i.name for i in session.get_inputs()], arrays, strict=True)))[0]


@pytest.mark.numerics
@pytest.mark.parametrize("head", ["conv", "matmul"])
@pytest.mark.parametrize("scale", [1, 2])
def test_graphs_match_the_reference_at_1x_and_2x(head, scale):
    config = TINY
    model = _model(config, seed=2)
    h, w = config.native_resolution
    out = (h * scale, w * scale)
    arrays = _scene(config, seed=8, count=2)
    expected = _reference(model, arrays, out)
    fp32 = _graph(config, model, "fp32", batch=2, out=out, head=head)
    onnx.checker.check_model(fp32, full_check=True)
    got = _onnx_run(fp32, arrays)
    assert got.shape == (2, *out, 3) and np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    fp16 = _graph(config, model, "fp16", batch=2, out=out, head=head)
    assert compare_images(_onnx_run(fp16, arrays), expected).psnr_db >= 45
    assert tensorrt_parser.problems(fp16) == []


def test_fp16_graph_keeps_the_fourier_argument_in_fp32_and_no_constant_grows_with_the_picture():
    model = _model(TINY)
    graph = _graph(TINY, model, "fp16", out=(64, 128))
    types = graph_dtypes(graph)
    trig = [n for n in graph.graph.node if n.op_type in ("Sin", "Cos")]
    assert len(trig) == 2 and all(types[n.input[0]] == TensorProto.FLOAT for n in trig)
    mlp = [n for n in graph.graph.node if n.op_type == "Conv" and n.input[1].startswith("pixel_mlp.")]
    assert len(mlp) == 3 and all(types[n.input[0]] == TensorProto.FLOAT16 for n in mlp)
    sizes = [sorted(int(np.prod(i.dims)) for i in _graph(TINY, model, "fp16", out=out).graph.initializer)
             for out in ((64, 128), (256, 512))]
    grown = [b - a for a, b in zip(*sizes, strict=True) if b != a]
    assert max(grown) <= 8 * (512 + 256)  # only the per-axis coordinate vectors grow, not an [H', W'] grid


@pytest.mark.numerics
@pytest.mark.parametrize("tail", [0, 2, 4, 9])
def test_fp16_graph_computes_the_trunks_last_blocks_in_fp32_marked_as_an_island(tail):
    config = TINY.with_options({"fp32_tail_blocks": tail})
    model = _model(config)
    graph = _graph(config, model, "fp16", out=(64, 128))
    types = graph_dtypes(graph)
    blocks = list(config.trunk.widths())
    fp32_blocks = set(blocks[max(0, len(blocks) - tail):]) if tail else set()  # 9 > 7 blocks: all of them
    for node in graph.graph.node:
        if node.op_type != "Conv" or node.input[1].startswith(("pixel_mlp.", "fourier.")):
            continue
        kept = node.input[1].split(".")[0] in fp32_blocks
        assert types[node.input[0]] == (TensorProto.FLOAT if kept else TensorProto.FLOAT16), node.input[1]
        assert ("fp32island" in node.name) == kept, node.name
    resize = [n for n in graph.graph.node
              if n.op_type == "Resize" and onnx.helper.get_node_attr_value(n, "mode") == b"linear"]
    assert len(resize) == 1 and types[resize[0].input[0]] == (TensorProto.FLOAT if tail else TensorProto.FLOAT16)
    # the FP16 PyTorch reference keeps the same blocks FP32, and so runs
    from crn_deploy.backends.torch_ref import TorchBackend

    with TorchBackend(model, "fp16", "cpu", picture_size=(64, 128)) as half:
        kept = {name for name in blocks if getattr(half._live, name).conv_0.weight.dtype == torch.float32}
        assert kept == fp32_blocks and half._live.pixel_mlp[0].weight.dtype == torch.float16
        arrays = _scene(config)
        assert compare_images(half.run(*arrays), _reference(model, arrays, (64, 128))).psnr_db >= 40


def test_an_fp32_graph_has_no_island_whatever_the_tail():
    config = TINY.with_options({"fp32_tail_blocks": 4})
    graph = _graph(config, _model(config), "fp32")
    assert [n.name for n in graph.graph.node if "fp32island" in n.name and n.op_type == "Conv"] == \
        [n.name for n in graph.graph.node if n.op_type == "Conv" and n.input[1] == "fourier.weight"]
    assert not [n for n in graph.graph.node if n.op_type == "Cast" and "fp32island" in n.name]


def test_the_fp16_fourier_argument_would_lose_its_phase_in_fp16():
    """Why the projection stays FP32: at the arguments a trained B gives, FP16 rounding moves sin visibly."""
    argument = np.linspace(50, 200, 1001)
    fp16_error = np.abs(np.sin(argument.astype(np.float16).astype(np.float64)) - np.sin(argument)).max()
    fp32_error = np.abs(np.sin(argument.astype(np.float32).astype(np.float64)) - np.sin(argument)).max()
    assert fp16_error > 0.01 > 1e-4 > fp32_error


def test_one_label_pixel_changes_only_the_pictures_pixels_its_features_reach():
    """Batch norm at inference is per pixel, so a label pixel reaches the features only through the
    trunk's convolutions; the head adds nothing: the picture changes exactly where features change
    (at 1x), and where the bilinear interpolation reads changed features (at 2x)."""
    config = TINY
    model = _model(config, seed=3)
    ids, inst = _scene(config, seed=9)
    changed = ids.copy()
    changed[0, 0, 5, 50] = 26 if ids[0, 0, 5, 50] != 26 else 7
    with torch.no_grad():
        seg = [model.encode(torch.from_numpy(i), torch.from_numpy(inst)) for i in (ids, changed)]
        features = [model.semantic_features(s) for s in seg]
    reached = (features[0] != features[1]).any(dim=1)[0]  # [H, W]
    assert 0 < reached.float().mean() < 0.9  # local, not everywhere
    for scale in (1, 2):
        out = (32 * scale, 64 * scale)
        pictures = [_reference(model, [i, inst], out)[0] for i in (ids, changed)]
        moved = np.any(pictures[0] != pictures[1], axis=-1)
        within = F.interpolate(reached[None, None].float(), size=out, mode="bilinear", align_corners=False)[0, 0] > 0
        assert moved.any() and not (moved & ~within.numpy()).any()


def test_the_same_features_with_shuffled_coordinates_give_the_shuffled_picture():
    model = _model(TINY, seed=4)
    ids, inst = _scene(TINY, seed=10)
    with torch.no_grad():
        features = model.semantic_features(model.encode(torch.from_numpy(ids), torch.from_numpy(inst)), (64, 128))
        grid = torch.from_numpy(posgen.coordinate_grid(TINY, (64, 128)))[None]
        picture = model.render(features, grid)
        order = torch.randperm(64 * 128, generator=torch.Generator().manual_seed(0))

        def shuffled(x):
            return x.flatten(2)[:, :, order].view_as(x)

        again = model.render(shuffled(features), shuffled(grid))
        assert torch.allclose(again, shuffled(picture), atol=1e-6)
        assert not torch.allclose(model.render(shuffled(features), grid), shuffled(picture), atol=1e-3)


def test_the_head_as_matmuls_or_1x1_convolutions_is_one_function():
    model = _model(TINY, seed=5)
    arrays = _scene(TINY, seed=11)
    convs, matmuls = (_onnx_run(_graph(TINY, model, "fp32", head=head), arrays) for head in ("conv", "matmul"))
    assert np.abs(convs.astype(int) - matmuls.astype(int)).max() <= 1


def test_presets_and_label_sets():
    posgen_family = FAMILIES["posgen"]
    demo = find_preset("posgen-demo")[1]
    assert posgen_family.label_set_for(demo).name == "cityscapes" and not demo.trunk.instances
    cityscapes = find_preset("posgen_cityscapes")[1]
    with torch.device("meta"):
        model = posgen.PosGenGenerator(cityscapes)
    count = sum(p.numel() for p in model.parameters())
    assert 90e6 < count < 100e6  # the description: about 97.5 M at SPADE's default width
    assert posgen_family.decoupled_output and not FAMILIES["spade"].decoupled_output
    ids, _ = patchwork_scene(32, 64, 35, seed=1)
    assert ids.max() < 35
