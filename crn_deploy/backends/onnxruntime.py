"""ONNX Runtime: CPU everywhere; the CUDA and TensorRT execution providers where installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, UsageError
from ..manifest import INPUT_NAME, OUTPUT_NAME
from .base import Backend, Finished
from .device_arrays import LEGACY_STREAM, check_label_batch, describe

# Provider chains by device, best first; ONNX Runtime falls back along the chain per node.
_CHAINS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
DEVICES = ("auto", *_CHAINS)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("the ONNX Runtime backend needs onnxruntime: pip install 'crn-deploy[ort]'") from None
    return onnxruntime


def available_devices() -> list[str]:
    """Devices whose first provider this onnxruntime build offers."""
    offered = set(import_onnxruntime().get_available_providers())
    return [device for device, chain in _CHAINS.items() if chain[0] in offered]


class OnnxRuntimeBackend(Backend):
    """``device``: cpu, cuda, tensorrt, or auto (cuda where offered, else cpu); ``gpu``: which CUDA device."""

    def __init__(self, path: Path, device: str = "auto", *, threads: int | None = None, gpu: int = 0) -> None:
        super().__init__()
        if device not in DEVICES:
            raise UsageError(f"unknown ONNX Runtime device '{device}': choose one of {', '.join(DEVICES)}")
        if gpu < 0:
            raise UsageError(f"gpu must be a CUDA device number >= 0, got {gpu}")
        self.path = Path(path)
        self.requested = device
        self.threads = threads
        self.gpu = gpu
        self.device = device
        self.name = f"onnxruntime-{device}"
        self._session = None

    def _open_impl(self) -> None:
        ort = import_onnxruntime()
        device = self._resolve_device()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: per-node fallback warnings are expected
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=self._providers(device))
        except FileNotFoundError:
            raise ArtifactError(f"{self.path} not found; export it with crn-export") from None
        except Exception as e:  # onnxruntime raises its own classes for invalid or truncated models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(
                f"ONNX Runtime cannot load {self.path} ({first}); re-export it with crn-export"
            ) from None
        self.device, self.name = device, f"onnxruntime-{device}"
        names = ([i.name for i in self._session.get_inputs()], [o.name for o in self._session.get_outputs()])
        if names[0][:1] != [INPUT_NAME] or names[1] != [OUTPUT_NAME]:
            raise ArtifactError(f"{self.path} has I/O {names}, not a crn-deploy export ({INPUT_NAME} -> {OUTPUT_NAME})")
        self._input_names = names[0]
        self._input_shape = tuple(self._session.get_inputs()[0].shape)

    def _resolve_device(self) -> str:
        offered = available_devices()
        if self.requested == "auto":
            return "cuda" if "cuda" in offered else "cpu"
        if self.requested not in offered:
            raise UsageError(
                f"ONNX Runtime here offers no {self.requested} provider (offered: {', '.join(offered)}); "
                "install onnxruntime-gpu with matching CUDA/TensorRT libraries, or use device cpu"
            )
        return self.requested

    def _providers(self, device: str) -> list:
        """The device's chain, with the chosen GPU (and, for TensorRT, caches beside the ONNX, so a
        rebuilt model does not reuse a stale engine) on the GPU providers."""
        on_gpu = {"device_id": self.gpu}
        cache = str(self.path.parent / "ort-trt-cache")
        options = {"CUDAExecutionProvider": on_gpu,
                   "TensorrtExecutionProvider": {**on_gpu, "trt_engine_cache_enable": True,
                                                 "trt_engine_cache_path": cache, "trt_timing_cache_enable": True,
                                                 "trt_timing_cache_path": cache}}
        return [(name, options[name]) if name in options else name for name in _CHAINS[device]]

    def _run_impl(self, ids: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        return self._session.run([OUTPUT_NAME], dict(zip(self._input_names, (ids, *extra), strict=True)))[0]

    def submit_device(self, labels, *extra, output: str = "host"):
        """Run a label map where it lives, through IO binding: CUDA memory (a CuPy array, a CUDA torch
        tensor) for the cuda/tensorrt providers, host memory (anything speaking DLPack) for cpu.
        ``output="device"`` leaves the picture in the session's memory as an ``OrtValue``. Artifacts with
        further inputs (instance maps) take them from host memory here."""
        if len(extra) != len(self._input_names) - 1:
            raise UsageError(f"{self.path} takes {', '.join(self._input_names)}: pass every one")
        where = "cpu" if self.device == "cpu" else "cuda"
        # A DLPack producer orders its work before the stream we name; ONNX Runtime reads on a stream of
        # its own that cannot wait on it, so name the legacy default stream and finish that below.
        array = describe(labels, LEGACY_STREAM if where == "cuda" else None)
        if array.device != where:
            raise UsageError(f"this ONNX Runtime session runs on {self.device} but the label map is in "
                             f"{array.device} memory; move it, or load the artifact with device='{array.device}'")
        check_label_batch(array, self._input_shape)
        if where == "cuda":
            if array.device_id not in (-1, self.gpu):
                raise UsageError(f"the label map is on GPU {array.device_id} and this session runs on GPU "
                                 f"{self.gpu}; move it, or load the artifact with gpu={array.device_id}")
            _wait_for_producer(LEGACY_STREAM if array.stream is None else array.stream)
        device_id = self.gpu if where == "cuda" else 0
        binding = self._session.io_binding()
        binding.bind_input(INPUT_NAME, where, device_id, np.uint8, list(array.shape), array.ptr)
        for name, value in zip(self._input_names[1:], extra, strict=True):
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output(OUTPUT_NAME, "cpu" if output == "host" else where, device_id if output == "device" else 0)
        self._session.run_with_iobinding(binding)
        value = binding.get_outputs()[0]
        return Finished(value.numpy() if output == "host" else value)

    def _close_impl(self) -> None:
        self._session = None


def _wait_for_producer(stream: int) -> None:
    from .cuda import check, import_cudart

    cudart = import_cudart()
    check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize (the label map's producer)")
