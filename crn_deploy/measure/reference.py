"""The PyTorch reference behind an artifact: the FP32 model it was exported from, rebuilt as its manifest
records it, that parity is measured against. Needs torch (the ``export`` extra); measure sits above the
model side, so the runtime and its backends never import it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..backends.torch_ref import TorchBackend
from ..errors import CheckpointError, UsageError
from ..manifest import Manifest, manifest_for
from ..precisions import FP32, Precision
from ..runtime.synthesizer import Synthesizer

NEEDS_TORCH = "the PyTorch reference needs torch: pip install 'crn-deploy[export]'"


def require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise UsageError(NEEDS_TORCH)


def reference_model(manifest: Manifest, checkpoint: Path | None = None):
    """The FP32 PyTorch model an artifact was exported from: its checkpoint (or ``checkpoint``, if that
    moved), or the preset and seed of a random-weights export."""
    require_torch()
    from ..models.checkpoint import model_from_source

    return model_from_source(manifest.source, manifest.config, checkpoint)


def reference_backend(manifest: Manifest, model, precision: Precision = FP32, device: str = "cpu",
                      **options) -> TorchBackend:
    """A backend running ``model`` as ``manifest``'s artifact runs: its input shape and its picture's size."""
    sizes = manifest.sizes
    return TorchBackend(model, precision, device, input_shape=manifest.input_spec.shape,
                        picture_size=sizes.picture if sizes.decoupled else None, **options)


def load_reference(path, *, precision: Precision | str | None = None, device: str = "cpu", checkpoint=None,
                   style_seed: int = 0) -> Synthesizer:
    """The PyTorch reference model behind an artifact (``x.onnx``, ``x.engine`` or ``x.json``), as a
    synthesizer like ``runtime.load`` gives. ``precision`` defaults to the artifact's on CUDA and to fp32 on
    the CPU, where PyTorch has no fast FP16 kernels (a hundred times slower)."""
    require_torch()
    manifest = Manifest.read(manifest_for(Path(path)))
    if precision is None:
        precision = FP32 if device == "cpu" else manifest.precision
    backend = reference_backend(manifest, reference_model(manifest, checkpoint), precision, device)
    return Synthesizer(backend, manifest, style_seed=style_seed).open()


TORCH_FP32 = "torch-fp32"


def fp32_pictures(manifest: Manifest, inputs: tuple[np.ndarray, ...], *, threads: int | None = None,
                  log: Callable[[str], None] = print) -> tuple[str, np.ndarray]:
    """(what painted them, the pictures) ``manifest``'s model paints from ``inputs`` at full precision: the
    PyTorch FP32 reference where torch and the weights are here; else, on a box without them, the artifact's
    own FP32 ONNX on ONNX Runtime's CPU provider (which the export checked against that reference)."""
    if importlib.util.find_spec("torch") is not None:
        try:
            model = reference_model(manifest)
        except CheckpointError as e:
            log(f"the PyTorch reference is not here ({e}); comparing with the FP32 artifact instead")
        else:
            with reference_backend(manifest, model) as ref:
                return TORCH_FP32, np.concatenate([ref.run(*(a[i : i + 1] for a in inputs))
                                                   for i in range(len(inputs[0]))])
    if manifest.precision != FP32:
        raise UsageError(f"{manifest.artifact} is {manifest.precision}: without torch, the reference is an FP32 "
                         "artifact; pass the FP32 one")
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError("a parity check needs a reference: torch (pip install 'crn-deploy[export]') or ONNX Runtime "
                         "(pip install 'crn-deploy[ort]')")
    from ..backends.onnxruntime import OnnxRuntimeBackend

    manifest.check_artifact()
    with Synthesizer(OnnxRuntimeBackend(manifest.artifact_path, "cpu", threads=threads), manifest) as synth:
        return f"{manifest.artifact} (onnxruntime-cpu)", synth.run_ids(*inputs)
