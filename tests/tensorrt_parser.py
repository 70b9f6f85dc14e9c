"""What TensorRT's ONNX parser takes, per op: the types of its data inputs (onnx-tensorrt
docs/operators.md, 10.x revision, as docs/engines.md summarises it; the ops the
pix2pixHD and SPADE graphs add read from the same table). UINT8 is listed for Cast alone: TensorRT allows it
only on network inputs and outputs. ``problems(graph)`` lists every node outside that support."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from crn_deploy.graph import graph_dtypes

_F = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_FI = _F | {TensorProto.INT32, TensorProto.INT64}
PARSER_TYPES = {
    "Conv": _F, "ConvTranspose": _F, "BatchNormalization": _F, "Gemm": _F, "LayerNormalization": _F,
    "InstanceNormalization": _F, "LeakyRelu": _F, "Sin": _F, "Cos": _F, "MatMul": _F, "Expand": _FI,
    "Relu": _FI, "Tanh": _F, "Resize": _F, "AveragePool": _F, "Clip": _F, "Round": _F, "Floor": _F,
    "Add": _FI, "Sub": _FI, "Mul": _FI, "Min": _FI, "Max": _FI, "Equal": _FI, "Pad": _FI,
    "Slice": _FI | {TensorProto.BOOL}, "Reshape": _FI | {TensorProto.BOOL}, "Concat": _FI | {TensorProto.BOOL},
    "Transpose": _FI | {TensorProto.BOOL}, "Cast": _FI | {TensorProto.UINT8, TensorProto.BOOL},
}
# the data inputs of these ops; the rest are constant parameters
_DATA_INPUTS = {"Resize": 1, "Reshape": 1, "Clip": 1, "Pad": 1, "Slice": 1, "Expand": 1}
# weights / scale and bias / running statistics
_CONSTANT_PARAMETERS = ("Conv", "ConvTranspose", "InstanceNormalization", "BatchNormalization")


def problems(graph) -> list[str]:
    assert 9 <= graph.opset_import[0].version <= 24
    types = graph_dtypes(graph)
    shapes = _static_shapes(graph)
    initializers = {i.name: i for i in graph.graph.initializer}
    found = []
    for node in graph.graph.node:
        allowed = PARSER_TYPES.get(node.op_type)
        if allowed is None:
            found.append(f"{node.op_type} is not in the parser's table")
            continue
        for name in node.input[: _DATA_INPUTS.get(node.op_type, len(node.input))]:
            if name and types[name] not in allowed:
                found.append(f"{node.op_type} {node.name} takes {TensorProto.DataType.Name(types[name])} {name}")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in _CONSTANT_PARAMETERS and not set(node.input[1:]) <= set(initializers):
            found.append(f"{node.name}: {node.op_type} parameters must be initializers")
        if node.op_type == "Resize":  # spatial only: by scales [1, 1, sh, sw] or sizes [N, C, h, w]
            given = node.input[2] if len(node.input) > 2 and node.input[2] else node.input[3]
            factors = numpy_helper.to_array(initializers[given])
            leading = [1, 1] if given == node.input[2] else shapes[node.input[0]][:2]
            if attrs.get("mode", b"nearest") not in (b"nearest", b"linear") or list(factors[:2]) != leading:
                found.append(f"{node.name}: resize {attrs} to {factors} (input {shapes.get(node.input[0])})")
        if node.op_type == "BatchNormalization" and (len(node.output) != 1 or attrs.get("training_mode", 0)):
            found.append(f"{node.name}: only inference batch norm")
        if node.op_type == "AveragePool" and len(attrs["kernel_shape"]) != 2:
            found.append(f"{node.name}: only 2D pooling")
        if node.op_type == "LayerNormalization" and len(node.output) != 1:
            found.append(f"{node.name}: only the output Y is supported")
        if node.op_type == "Pad" and attrs.get("mode", b"constant") not in (b"constant", b"reflect"):
            found.append(f"{node.name}: pad mode {attrs['mode']}")
    uint8 = {name for name, t in types.items() if t == TensorProto.UINT8}
    inputs_outputs = {i.name for i in graph.graph.input} | {o.name for o in graph.graph.output}
    if not uint8 <= inputs_outputs:
        found.append(f"UINT8 inside the network: {sorted(uint8 - inputs_outputs)}")
    return found


def _static_shapes(graph) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(graph)
    return {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
