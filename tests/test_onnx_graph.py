from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from crn_deploy.backends.onnxruntime import OnnxRuntimeBackend
from crn_deploy.models.crn import CRN, random_init
from crn_deploy.graph import assemble, graph_dtypes, state_to_numpy
from crn_deploy.models.crn import graph_parts
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes
from crn_deploy.data.synthetic import street_layouts
from crn_deploy.measure.parity import compare_images

from . import tensorrt_parser


def _graph(config, seed, resolution, precision, batch=1):
    model = random_init(CRN(config), seed).eval()
    return model, assemble(*graph_parts(config, state_to_numpy(model.state_dict()), Sizes.same(resolution),
                                        as_precision(precision), batch))


def _run(graph, tmp_path, ids):
    path = tmp_path / "g.onnx"
    onnx.save_model(graph, str(path))
    with OnnxRuntimeBackend(path, "cpu") as backend:
        return backend.run(ids)


def test_fp16_graph_computes_in_fp16_but_normalizes_in_fp32(tiny_config):
    _, graph = _graph(tiny_config, 1, (32, 64), "fp16")
    onnx.checker.check_model(graph, full_check=True)
    types = graph_dtypes(graph)
    by_op = {}
    for node in graph.graph.node:
        by_op.setdefault(node.op_type, []).append(node)
    assert "GroupNormalization" not in by_op  # TensorRT miscomputes one-group GroupNormalization
    norms = by_op["LayerNormalization"]
    assert len(norms) == 2 * tiny_config.num_modules
    for node in norms:
        assert all(types[name] == TensorProto.FLOAT for name in node.input)
        assert node.attribute[0].name == "axis" and node.attribute[0].i == 1
    for node in by_op["Conv"]:
        assert all(types[name] == TensorProto.FLOAT16 for name in node.input)
    for node in by_op["Resize"]:
        assert types[node.input[0]] == TensorProto.FLOAT16 and types[node.input[2]] == TensorProto.FLOAT
    assert graph.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert graph.graph.output[0].type.tensor_type.elem_type == TensorProto.UINT8


def test_no_initializer_grows_with_the_resolution(tiny_config):
    # The layer norm's scale stays [C,1,1]: no [C,H,W] constant (torch's exporter makes one per layer).
    small = {i.name: i.dims for i in _graph(tiny_config, 1, (32, 64), "fp32")[1].graph.initializer}
    large = {i.name: i.dims for i in _graph(tiny_config, 1, (128, 256), "fp32")[1].graph.initializer}
    changed = {name for name in small if small[name] != large[name]}
    assert changed == set()
    assert small["blocks.0.norm1.weight"] == [tiny_config.widths[0], 1, 1]


@pytest.mark.parametrize("batch", [1, 2])
def test_fp32_graph_matches_the_reference_to_one_level(tiny_config, tmp_path, batch):
    model, graph = _graph(tiny_config, 5, (64, 96), "fp32", batch)
    ids = street_layouts(batch, 64, 96, seed=8)
    with torch.no_grad():
        reference = model(torch.from_numpy(ids)).numpy()
    out = _run(graph, tmp_path, ids)
    assert out.shape == reference.shape == (batch, 64, 96, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


def test_fp16_graph_reaches_40_db(tiny_config, tmp_path):
    model, graph = _graph(tiny_config, 6, (64, 96), "fp16")
    ids = street_layouts(1, 64, 96, seed=9)
    with torch.no_grad():
        reference = model(torch.from_numpy(ids)).numpy()
    parity = compare_images(_run(graph, tmp_path, ids), reference)
    assert parity.psnr_db is not None and parity.psnr_db >= 40


def test_k_images_come_out_in_the_released_channel_order(tiny_config, tmp_path):
    config = replace(tiny_config, k=3)
    model, graph = _graph(config, 7, (32, 64), "fp32")
    ids = street_layouts(1, 32, 64, seed=10)
    with torch.no_grad():
        raw = (model.features(torch.from_numpy(ids)).float() + 1) * 127.5
    out = _run(graph, tmp_path, ids)
    assert out.shape == (1, 3, 32, 64, 3)
    for j in range(3):
        for c in range(3):
            expected = torch.round(raw[0, 3 * c + j].clamp(0, 255)).numpy()
            assert np.abs(out[0, j, :, :, c].astype(int) - expected.astype(int)).max() <= 1


def test_void_ids_all_light_the_same_channel(tiny_config, tmp_path):
    _, graph = _graph(tiny_config, 8, (32, 64), "fp32")
    ids = street_layouts(1, 32, 64, seed=11)
    as_19, as_200 = ids.copy(), ids.copy()
    as_19[ids == 255], as_200[ids == 255] = 19, 200
    assert np.array_equal(_run(graph, tmp_path, as_19), _run(graph, tmp_path, as_200))


@pytest.mark.parametrize("precision, k, batch", [("fp16", 1, 1), ("fp32", 1, 2), ("fp16", 3, 1)])
def test_graphs_stay_inside_what_the_tensorrt_onnx_parser_accepts(tiny_config, precision, k, batch):
    _, graph = _graph(replace(tiny_config, k=k), 2, (32, 64), precision, batch)
    assert tensorrt_parser.problems(graph) == []
