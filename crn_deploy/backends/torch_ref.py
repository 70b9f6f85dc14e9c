"""The PyTorch reference model as a backend: FP32, or FP16 with the normalization statistics in FP32
(the same semantics as the FP16 ONNX). On CUDA: channels_last, pinned staging buffers and, for a
fixed input shape, one CUDA graph replayed per frame — what a user would otherwise run.

The only backend that imports torch, and only when opened. It is handed the model; rebuilding the model
an artifact came from is the model side's work (``crn_deploy.measure.reference``).
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import UsageError
from ..precisions import Precision
from ..precisions import precision as as_precision
from .base import Backend


def torch_devices() -> list[str]:
    """Where this torch can run the reference: cpu, and cuda where it sees a GPU."""
    import torch  # noqa: TID251 - the PyTorch backend, lazily

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cuda_device_facts() -> dict | None:
    """Name, compute capability and memory of CUDA device 0 as torch sees it; None without one."""
    import torch  # noqa: TID251 - the PyTorch backend, lazily

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1)}


class TorchBackend(Backend):
    """Runs a family's reference model at ``precision`` on ``device`` (cpu or cuda).

    ``input_shape`` ([B,1,H,W]) lets the CUDA path allocate once and capture a graph. ``picture_size``: the
    size a model with a pixel-wise head paints at, passed to it as an argument (None: the label map's).
    """

    def __init__(self, model, precision: Precision | str = "fp32", device: str = "cpu", *,
                 input_shape: tuple[int, ...] | None = None, cuda_graphs: bool = True,
                 picture_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model, self.precision, self.device = model, as_precision(precision), device
        self._size_argument = {"picture_size": tuple(picture_size)} if picture_size else {}
        self.input_shape = tuple(input_shape) if input_shape else None
        self.use_cuda_graphs = cuda_graphs
        self.name = f"torch-{device.split(':')[0]}"
        self.graphs_active = False
        self._live = None

    def _open_impl(self) -> None:
        import torch  # noqa: TID251 - the PyTorch backend, lazily

        on_cuda = self.device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise UsageError("the PyTorch backend was asked for cuda but this torch sees no CUDA GPU; use device cpu")
        live = copy.deepcopy(self.model).eval().to(self.device)
        if self.precision.reduced:
            live.half()
            for module in live.modules():  # same semantics as the FP16 ONNX: normalization stays FP32
                if getattr(module, "keep_fp32", False):
                    module.float()
        if on_cuda:
            live = live.to(memory_format=torch.channels_last)
        self._torch, self._live = torch, live
        if on_cuda and self.input_shape:
            self._prepare_cuda(torch)

    def _prepare_cuda(self, torch) -> None:
        out_shape = self._forward(torch.zeros(self.input_shape, dtype=torch.uint8, device=self.device)).shape
        self._host_in = torch.empty(self.input_shape, dtype=torch.uint8, pin_memory=True)
        self._host_out = torch.empty(out_shape, dtype=torch.uint8, pin_memory=True)
        self._static_in = torch.zeros(self.input_shape, dtype=torch.uint8, device=self.device)
        if not self.use_cuda_graphs:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as graph capture requires
            for _ in range(2):
                self._forward(self._static_in)
        torch.cuda.current_stream().wait_stream(side)
        try:
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._static_out = self._forward(self._static_in)
            self.graphs_active = True
        except RuntimeError:  # a capture failure leaves eager execution working
            self._graph, self.graphs_active = None, False

    def device_memory_bytes(self) -> int | None:
        if not self.device.startswith("cuda"):
            return None
        return int(self._torch.cuda.max_memory_allocated(self.device))

    def _forward(self, labels, *extra):
        with self._torch.inference_mode():
            return self._live(labels, *extra, **self._size_argument)

    def _run_impl(self, ids: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self.device == "cpu" or ids.shape != self.input_shape or extra:  # graphs: single-input models
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in (ids, *extra)]
            return self._forward(*tensors).cpu().numpy()
        self._host_in.numpy()[...] = ids
        self._static_in.copy_(self._host_in, non_blocking=True)
        if self.graphs_active:
            self._graph.replay()
            out = self._static_out
        else:
            out = self._forward(self._static_in)
        self._host_out.copy_(out, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return self._host_out.numpy().copy()

    def _close_impl(self) -> None:
        self._live = self._graph = self._static_in = self._static_out = None
        self._host_in = self._host_out = None
