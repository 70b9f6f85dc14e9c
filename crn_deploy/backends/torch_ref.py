"""The PyTorch reference model as a backend: FP32, or FP16 with the layer-norm statistics in FP32.

The only backend that imports torch, and only when opened.
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import UsageError
from .base import Backend


class TorchBackend(Backend):
    """Runs a ``crn_deploy.build.model.CRN`` at ``precision`` on ``device`` (cpu or cuda)."""

    def __init__(self, model, precision: str = "fp32", device: str = "cpu") -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.device = device
        self.name = f"torch-{device}"
        self._live = None

    def _open_impl(self) -> None:
        import torch

        from ..build.model import SlimLayerNorm

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("the PyTorch backend was asked for cuda but this torch sees no CUDA GPU; use device cpu")
        live = copy.deepcopy(self.model).eval().to(self.device)
        if self.precision == "fp16":
            live.half()
            for module in live.modules():  # same semantics as the FP16 ONNX: norm affine stays FP32
                if isinstance(module, SlimLayerNorm):
                    module.float()
        self._torch, self._live = torch, live

    def _run_impl(self, ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._live(torch.from_numpy(ids).to(self.device))
        return out.cpu().numpy()

    def run_float(self, ids: np.ndarray) -> np.ndarray:
        """The float32 image in [0, 255] before rounding: for analysis."""
        with self._torch.inference_mode():
            return self._live.forward_float(self._torch.from_numpy(ids).to(self.device)).cpu().numpy()

    def _close_impl(self) -> None:
        self._live = None
