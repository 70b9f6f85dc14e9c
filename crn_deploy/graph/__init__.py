"""Writing ONNX graphs by hand, for every family: a small node/initializer builder, the file writer,
the opset, and the compute types of each precision. A layer of its own, below the family models that
write graphs with it and the export pipeline that validates them.

Why by hand and not torch.onnx.export: TensorRT 11 and TensorRT-RTX build strongly typed networks only,
so the precision of every tensor must be decided in the graph (docs/engines.md); each family's graph
writer (``crn_deploy.models``) says it tensor by tensor. Only onnx and numpy are needed here: the
weights arrive as a name -> array dict.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..precisions import FP32_ISLAND, Precision

OPSET = 17  # LayerNormalization; TensorRT's parser takes opsets 9..24
IR_VERSION = 8  # the IR of opset 17: readable by ONNX Runtime and TensorRT 10/11

FLOAT = TensorProto.FLOAT


def compute_types(precision: Precision) -> tuple[int, type]:
    """The ONNX element type and the NumPy scalar type a graph of ``precision`` computes in."""
    return precision.onnx_type, np.dtype(precision.numpy_type).type


ONNX_DTYPES = {"uint8": TensorProto.UINT8, "int32": TensorProto.INT32, "float32": TensorProto.FLOAT}


class GraphBuilder:
    """A small builder: unique names, initializers, nodes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._constants: dict[str, np.ndarray] = {}
        self._in_island = False

    @contextmanager
    def fp32_island(self):
        """Every node made inside computes in FP32 by design, whatever the graph's precision."""
        outer, self._in_island = self._in_island, True
        try:
            yield
        finally:
            self._in_island = outer

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name already given returns the same one (it must hold the same value)."""
        value = np.ascontiguousarray(value)
        if name in self._constants:
            known = self._constants[name]
            assert known.dtype == value.dtype and np.array_equal(known, value), f"two different constants named {name}"
            return name
        self._constants[name] = value
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, fp32_island: bool = False,
           **attrs) -> str:
        """A node; ``name`` names its output. ``fp32_island`` (or a node made inside ``with g.fp32_island()``):
        it computes in FP32 by design in every precision, and its node name says so (the engine builder's
        precision check reads it)."""
        self._count += 1
        out = name or f"{op_type.lower()}_{self._count}"
        island = fp32_island or self._in_island
        node_name = f"{op_type}_{self._count}" + (f"_{FP32_ISLAND}" if island else "")
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node_name, **attrs))
        return out


def model_of(g: GraphBuilder, name: str, inputs, output) -> onnx.ModelProto:
    """``g``'s nodes as a model with the family's typed inputs and output (``TensorSpec``s), without its
    weights: ``make_graph``/``make_model`` copy every initializer in one call that holds the GIL for
    seconds on a 400 MB model, so ``write_model`` or ``assemble`` add them one at a time."""
    def info(spec):
        return helper.make_tensor_value_info(spec.name, ONNX_DTYPES[spec.dtype], spec.shape)

    graph = helper.make_graph(g.nodes, name, [info(spec) for spec in inputs], [info(output)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                             producer_name="crn-deploy")


def assemble(shell: onnx.ModelProto, weights: list[onnx.TensorProto]) -> onnx.ModelProto:
    """The model ``graph_parts``-style writers describe, as one ModelProto (weights added one at a time:
    see ``write_model``)."""
    for tensor in weights:
        shell.graph.initializer.add().CopyFrom(tensor)
    return shell


def write_model(shell: onnx.ModelProto, weights: list[onnx.TensorProto], path) -> None:
    """The model ``crn_graph_parts`` describes, as one ONNX file: the graph, then one weight at a time.

    Protobuf merges concatenated messages (repeated fields append), so the file parses to the same
    model everywhere; but no single call serializes 400 MB while holding the GIL (seconds in which a
    Ctrl-C or SIGTERM could not be answered), and the file's bytes never sit in memory whole."""
    with open(path, "wb") as f:
        f.write(shell.SerializeToString())
        for tensor in weights:
            f.write(onnx.ModelProto(graph=onnx.GraphProto(initializer=[tensor])).SerializeToString())


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
