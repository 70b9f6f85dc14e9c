"""Write the CRN as an ONNX graph, node by node, in FP32 or FP16.

Why by hand and not torch.onnx.export: TensorRT 11 builds strongly typed networks only, so the
precision of every tensor must be decided in the graph (tensorrt.md §1.3). Here it is explicit:
  - uint8 ids -> one-hot + void (Min/Equal) and the area pyramid (AveragePool) in FP32, each
    level cast once to the compute type (k/4^n fractions need more than FP16's 11 bits);
  - Conv, Resize, Concat, LeakyRelu in the compute type;
  - every layer norm in FP32 (Cast up, LayerNormalization(axis=1) with [C,1,1] scale/shift, Cast
    down): TensorRT maps it to its native normalization layer, and no [C,H,W] constant is made
    (torch's exporter would make one per layer, hundreds of MB);
  - the output tail ((x+1)*127.5, Clip, Round, to NHWC, uint8) in FP32 on 3k channels.
Only onnx and numpy are needed: the weights arrive as a name -> array dict.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..config import CRNConfig
from ..manifest import INPUT_NAME, OUTPUT_NAME, io_specs
from ..precisions import TABLE as PRECISION_TABLE

OPSET = 17  # LayerNormalization; TensorRT's parser takes opsets 9..24
IR_VERSION = 8  # the IR of opset 17: readable by ONNX Runtime and TensorRT 10/11

_FLOAT = TensorProto.FLOAT
COMPUTE_TYPES = {name: (p.onnx_type, np.dtype(p.numpy_type).type) for name, p in PRECISION_TABLE.items()}
_ONNX_DTYPES = {"uint8": TensorProto.UINT8}


class GraphBuilder:
    """A small builder: unique names, initializers, nodes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._constants: dict[str, np.ndarray] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name already given returns the same one (it must hold the same value)."""
        value = np.ascontiguousarray(value)
        if name in self._constants:
            assert np.array_equal(self._constants[name], value), f"two different constants named {name}"
            return name
        self._constants[name] = value
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self._count += 1
        out = name or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self._count}", **attrs))
        return out


def build_crn_graph(
    config: CRNConfig,
    weights: dict[str, np.ndarray],
    resolution: tuple[int, int],
    precision: str,
    batch: int = 1,
    eps: float = 1e-12,
) -> onnx.ModelProto:
    """The whole network for one resolution, precision and batch size."""
    model, tensors = crn_graph_parts(config, weights, resolution, precision, batch, eps)
    for tensor in tensors:  # one at a time: see write_model
        model.graph.initializer.add().CopyFrom(tensor)
    return model


def crn_graph_parts(
    config: CRNConfig,
    weights: dict[str, np.ndarray],
    resolution: tuple[int, int],
    precision: str,
    batch: int = 1,
    eps: float = 1e-12,
) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The network without its weights, and the weights: ``write_model`` writes them as one file.
    (``make_graph``/``make_model`` copy every initializer in one call that holds the GIL for seconds
    on a 400 MB model, so the weights stay out of them.)"""
    compute_type, np_type = COMPUTE_TYPES[precision]
    g = GraphBuilder()
    levels = _layout_pyramid(g, config, compute_type)
    x = levels[0]
    scales = g.const("upsample_scales", np.array([1, 1, 2, 2], np.float32))
    for i in range(config.num_modules):
        if i:
            up = g.op("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="align_corners")
            x = g.op("Concat", [up, levels[i]], axis=1)  # features first, then the layout
        for j in (1, 2):
            prefix = f"blocks.{i}.conv{j}"
            conv = g.op("Conv", [x, g.const(f"{prefix}.weight", weights[f"{prefix}.weight"].astype(np_type))],
                        kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x = g.op("LeakyRelu", [_fp32_norm(g, conv, f"blocks.{i}.norm{j}", weights, compute_type, eps)], alpha=0.2)
    head = g.op("Conv", [x, g.const("head.weight", weights["head.weight"].astype(np_type)),
                         g.const("head.bias", weights["head.bias"].astype(np_type))], kernel_shape=[1, 1])
    _to_uint8_images(g, head, config, resolution, batch, compute_type)

    in_spec, out_spec = io_specs(config, resolution, batch)
    graph = helper.make_graph(
        g.nodes,
        f"crn_{resolution[0]}x{resolution[1]}_{precision}",
        [helper.make_tensor_value_info(INPUT_NAME, _ONNX_DTYPES[in_spec.dtype], in_spec.shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, _ONNX_DTYPES[out_spec.dtype], out_spec.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="crn-deploy")
    return model, g.initializers


def write_model(shell: onnx.ModelProto, weights: list[onnx.TensorProto], path) -> None:
    """The model ``crn_graph_parts`` describes, as one ONNX file: the graph, then one weight at a time.

    Protobuf merges concatenated messages (repeated fields append), so the file parses to the same
    model everywhere; but no single call serializes 400 MB while holding the GIL (seconds in which a
    Ctrl-C or SIGTERM could not be answered), and the file's bytes never sit in memory whole."""
    with open(path, "wb") as f:
        f.write(shell.SerializeToString())
        for tensor in weights:
            f.write(onnx.ModelProto(graph=onnx.GraphProto(initializer=[tensor])).SerializeToString())


def _layout_pyramid(g: GraphBuilder, config: CRNConfig, compute_type: int) -> list[str]:
    """One-hot + void at full resolution, then 2x2 averages; coarsest first, in the compute type."""
    ids = g.op("Cast", [INPUT_NAME], to=_FLOAT)
    clamped = g.op("Min", [ids, g.const("void_id", np.array(config.num_classes, np.float32))])
    classes = np.arange(config.layout_channels, dtype=np.float32).reshape(1, -1, 1, 1)
    hot = g.op("Equal", [clamped, g.const("class_ids", classes)])
    level = g.op("Cast", [hot], to=_FLOAT, name="layout")
    levels = [level]
    for _ in range(config.num_modules - 1):
        level = g.op("AveragePool", [level], kernel_shape=[2, 2], strides=[2, 2])
        levels.append(level)
    if compute_type != _FLOAT:
        levels = [g.op("Cast", [lv], to=compute_type) for lv in levels]
    return levels[::-1]


def _fp32_norm(g: GraphBuilder, x: str, prefix: str, weights: dict, compute_type: int, eps: float) -> str:
    """Slim layer norm over C,H,W with per-channel affine, computed in FP32 whatever the graph's type."""
    gamma = weights[f"{prefix}.weight"].astype(np.float32).reshape(-1, 1, 1)
    beta = weights[f"{prefix}.bias"].astype(np.float32).reshape(-1, 1, 1)
    if compute_type != _FLOAT:
        x = g.op("Cast", [x], to=_FLOAT)
    y = g.op("LayerNormalization", [x, g.const(f"{prefix}.weight", gamma), g.const(f"{prefix}.bias", beta)],
             axis=1, epsilon=eps)
    return g.op("Cast", [y], to=compute_type) if compute_type != _FLOAT else y


def _to_uint8_images(g: GraphBuilder, head: str, config: CRNConfig, resolution, batch: int, compute_type: int) -> None:
    """(x + 1) * 127.5 -> clip -> round (half to even) -> NHWC -> uint8, all in FP32."""
    x = g.op("Cast", [head], to=_FLOAT) if compute_type != _FLOAT else head
    x = g.op("Add", [x, g.const("one", np.array(1.0, np.float32))])
    x = g.op("Mul", [x, g.const("half_range", np.array(127.5, np.float32))])
    x = g.op("Clip", [x, g.const("black", np.array(0.0, np.float32)), g.const("white", np.array(255.0, np.float32))])
    x = g.op("Round", [x])
    if config.k == 1:
        x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    else:  # image j's colour c is channel k*c + j (the released code's order)
        split = np.array([batch, 3, config.k, *resolution], np.int64)
        x = g.op("Reshape", [x, g.const("split_images", split)])
        x = g.op("Transpose", [x], perm=[0, 2, 3, 4, 1])
    g.op("Cast", [x], to=TensorProto.UINT8, name=OUTPUT_NAME)


def state_to_numpy(state: dict) -> dict[str, np.ndarray]:
    """A torch state_dict as float32 NumPy arrays (the graph casts to its own precision)."""
    return {k: v.detach().cpu().float().numpy() for k, v in state.items()}


def graph_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor in the graph, by shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    return types
