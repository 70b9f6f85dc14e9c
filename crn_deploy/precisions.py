"""Precision as one table: what ``fp32``, ``fp16`` and ``bf16`` mean to each tool that reads them (ONNX, NumPy,
TensorRT, the engine inspector, OpenVINO) and which parity gate an artifact or engine of that precision must
pass. ONNX artifacts are written in FP32 or FP16; BF16 is a precision CPU engines compute an FP32 artifact in
(OpenVINO). Stdlib only: the ONNX and TensorRT types are given by their enum value and name."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True, eq=False)
class Precision:
    """A precision an artifact computes in; passed as this object from the command line to the engine. It is
    its name: equal to (and hashed as) the string, so records and reports keyed by name find it."""

    name: str
    onnx_type: int  # onnx.TensorProto.DataType value of the compute type
    numpy_type: str
    tensorrt_type: str  # tensorrt.DataType member
    inspector_weights: str  # the engine inspector's name for weights of this type
    reduced: bool  # narrower than FP32: normalization statistics stay FP32 around it
    # the export's parity floor against the PyTorch FP32 reference: the most any value may differ (levels)
    # and, for a reduced precision, the least PSNR (dB)
    max_levels: float
    min_psnr_db: float | None
    openvino_hint: str | None = None  # OpenVINO's INFERENCE_PRECISION_HINT for a CPU engine computing in it
    graph: bool = True  # ONNX artifacts are written in it (BF16 is only an engine's inference precision)

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        return self.name == (other.name if isinstance(other, Precision) else other)

    def __hash__(self) -> int:
        return hash(self.name)


TABLE: dict[str, Precision] = {
    "fp32": Precision("fp32", 1, "float32", "FLOAT", "Float", False, 1.0, None, openvino_hint="f32"),
    "fp16": Precision("fp16", 10, "float16", "HALF", "Half", True, 4.0, 55.0),
    # BF16: FP32's exponent with an 8-bit mantissa; held to FP16's floor. NumPy has no bfloat16 type.
    "bf16": Precision("bf16", 16, "bfloat16", "BF16", "BFloat16", True, 4.0, 55.0, openvino_hint="bf16", graph=False),
}
NAMES = tuple(name for name, p in TABLE.items() if p.graph)  # what ONNX artifacts are exported in
FP32, FP16, BF16 = TABLE["fp32"], TABLE["fp16"], TABLE["bf16"]

# Graph nodes whose names hold this compute in FP32 by design, whatever the graph's precision (PosGen's Fourier
# projection: an FP16 argument of sin/cos is off by radians). The engine check accepts their FP32 convolutions.
FP32_ISLAND = "fp32island"


def precision(name: str | Precision) -> Precision:
    """The precision named (a ``Precision`` passes through as it is)."""
    if isinstance(name, Precision):
        return name
    try:
        return TABLE[name.lower()]
    except KeyError:
        raise UsageError(f"unknown precision '{name}': choose one of {', '.join(TABLE)}") from None
