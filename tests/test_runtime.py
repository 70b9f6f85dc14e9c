import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from crn_deploy import runtime
from crn_deploy.measure.reference import load_reference
from crn_deploy.data.synthetic import street_layout, street_layouts
from crn_deploy.errors import ArtifactError, UsageError
from crn_deploy.labels import CITYSCAPES, VOID_ID, IdsPastLabelSetWarning, UnknownColorsWarning

from .conftest import TINY_RES, export_tiny


def test_runtime_imports_without_torch_or_backends():
    code = ("import sys, crn_deploy.runtime, crn_deploy.backends; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


_BLOCK_TORCH = """
import sys
import warnings

import cv2
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked: the runtime must not need it")
sys.meta_path.insert(0, BlockTorch())
"""


def test_runtime_runs_an_artifact_where_torch_cannot_be_imported(tiny_artifacts):
    path = tiny_artifacts["fp16"].artifact_path
    code = _BLOCK_TORCH + (
        "import numpy as np\n"
        "import crn_deploy.data.images, crn_deploy.measure.parity, crn_deploy.measure.report\n"
        f"from crn_deploy import runtime\nwith runtime.load({str(path)!r}) as s:\n"
        "    print(s(np.zeros((64, 96), np.uint8)).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(64, 96, 3)"


def test_single_and_batched_id_maps(tiny_artifacts):
    ids = street_layouts(3, *TINY_RES, seed=1)
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth:
        single = synth(ids[0, 0])
        batch = synth(ids[:, 0])
        nchw = synth(ids)
        as_int64 = synth(ids[0, 0].astype(np.int64))
    assert single.shape == (*TINY_RES, 3) and single.dtype == np.uint8
    assert batch.shape == (3, *TINY_RES, 3)
    assert np.array_equal(batch, nchw) and np.array_equal(batch[0], single) and np.array_equal(single, as_int64)


def test_arrays_shaped_like_images_are_taken_as_one_map(tiny_artifacts):
    ids = street_layout(*TINY_RES, seed=2)
    colors = CITYSCAPES.ids_to_colors(ids)
    rgba = np.concatenate([colors, np.full((*TINY_RES, 1), 7, np.uint8)], axis=2)  # alpha ignored
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth:
        expected = synth(ids)
        for same in (ids[..., None], colors, rgba):  # [H,W,1] ids; RGB and RGBA colour maps
            out = synth(same)
            assert out.shape == (*TINY_RES, 3) and np.array_equal(out, expected)
        assert np.array_equal(synth(np.stack([ids, ids])[..., None]), np.stack([expected, expected]))
        assert np.array_equal(synth(np.stack([rgba, rgba])), np.stack([expected, expected]))


def test_ids_past_the_label_set_are_counted_warned_of_once_or_refused(tiny_artifacts):
    ids = street_layout(*TINY_RES, seed=2)
    past = ids.copy()
    past[: TINY_RES[0] // 4] = 50  # a quarter of the map: id 50 has no class in a 19-class model
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            synth(past)
            synth(past[None])  # warned once per synthesizer, counted every time
        assert [w.category for w in caught] == [IdsPastLabelSetWarning]
        assert "id 50 on" in str(caught[0].message) and "'cityscapes' label set's 19 classes" in str(caught[0].message)
        assert synth.unknown_colors.past_ids == {50: 2 * past[: TINY_RES[0] // 4].size}
        with pytest.raises(UsageError, match=r"ids past the 'cityscapes' label set's 19 classes \(id 50 on"):
            synth(past, strict=True)
        void = ids.copy()
        void[:4] = VOID_ID  # void is deliberate: neither warned of nor refused
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            synth(void, strict=True)
            synth(ids, strict=True)


def test_colours_outside_the_palette_are_counted_warned_of_or_refused(tiny_artifacts):
    ids = street_layout(*TINY_RES, seed=2)
    ok, jpeg = cv2.imencode(".jpg", CITYSCAPES.ids_to_colors(ids)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    saved_as_jpeg = np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1])
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            synth.from_colors(saved_as_jpeg)
            synth.from_colors(saved_as_jpeg)  # warned once per synthesizer, counted every time
        assert [w.category for w in caught] == [UnknownColorsWarning]
        message = str(caught[0].message)
        assert "outside the 'cityscapes' palette" in message and message.count(" px") == 3
        assert synth.unknown_colors.share > 0.05 and synth.unknown_colors.pixels == 2 * TINY_RES[0] * TINY_RES[1]
        with pytest.raises(UsageError, match="outside the 'cityscapes' palette.*commonest"):
            synth.from_colors(saved_as_jpeg, strict=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            synth.from_colors(CITYSCAPES.ids_to_colors(ids))  # exact colours: no warning


def test_colour_maps_match_their_id_maps(tiny_artifacts):
    ids = street_layout(*TINY_RES, seed=2)
    with runtime.load(tiny_artifacts["fp16"].artifact_path) as synth:
        by_ids = synth(ids)
        assert np.array_equal(synth.from_colors(CITYSCAPES.ids_to_colors(ids)), by_ids)
        assert np.array_equal(synth(CITYSCAPES.ids_to_colors(ids), label_set=CITYSCAPES), by_ids)


def test_other_sizes_are_resized_in_and_out(tiny_artifacts):
    big = street_layout(128, 192, seed=3)  # 2x the artifact's 64x96
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth:
        out = synth(big)
        native = synth(big[::2, ::2])
        engine_sized = synth(big, output_size="engine")
    assert out.shape == (128, 192, 3) and engine_sized.shape == (*TINY_RES, 3)
    assert np.array_equal(engine_sized, native)  # nearest downsampling picks the same ids
    odd = street_layout(50, 70, seed=3)
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth:
        assert synth(odd).shape == (50, 70, 3)


def test_batch_artifact_pads_the_last_chunk(tmp_path, tiny_source, tiny_artifacts):
    manifest = export_tiny(tiny_source, tmp_path, precisions=["fp32"], batch=2, name="b2")[0]
    ids = street_layouts(3, *TINY_RES, seed=4)
    with runtime.load(manifest.artifact_path) as b2, runtime.load(tiny_artifacts["fp32"].artifact_path) as b1:
        assert np.array_equal(b2(ids), b1(ids))


def test_k_image_models_return_k_pictures(tmp_path, tiny_k3_source):
    manifest = export_tiny(tiny_k3_source, tmp_path, precisions=["fp32"])[0]
    with runtime.load(manifest.artifact_path) as synth:
        assert synth(street_layout(*TINY_RES, seed=5)).shape == (3, *TINY_RES, 3)
        assert synth(street_layout(32, 48, seed=5)).shape == (3, 32, 48, 3)


@pytest.mark.parametrize("labels, message", [
    (np.zeros((64, 96), np.float32), "integer class ids"),
    (np.zeros((64, 96, 3), np.int64), "ambiguous.*colour maps uint8"),  # ids 3 wide, or colours as int?
    (np.zeros((2, 64, 96, 5), np.uint8), r"\[N,1,H,W\]"),
    (np.zeros((2, 2, 64, 96), np.uint8), "ambiguous or not a label map"),
    (np.full((64, 96), 300, np.int32), "0..255"),
    (np.zeros((0, 96), np.uint8), "empty"),
])
def test_bad_label_maps_get_a_clear_error(tiny_artifacts, labels, message):
    with runtime.load(tiny_artifacts["fp32"].artifact_path) as synth, pytest.raises(UsageError, match=message):
        synth(labels)


def test_reference_backend_behind_the_same_interface(tiny_artifacts):
    ids = street_layout(*TINY_RES, seed=6)
    with load_reference(tiny_artifacts["fp32"].artifact_path) as ref, \
            runtime.load(tiny_artifacts["fp32"].artifact_path) as onnx_synth:
        assert np.abs(ref(ids).astype(int) - onnx_synth(ids).astype(int)).max() <= 1


def test_the_reference_of_an_fp16_artifact_runs_fp32_on_the_cpu(tiny_artifacts):
    # PyTorch FP16 on a CPU is about a hundred times slower than FP32: the README's snippet took 100 s.
    with load_reference(tiny_artifacts["fp16"].artifact_path) as ref:
        assert ref.backend.precision.name == "fp32"
    with load_reference(tiny_artifacts["fp16"].artifact_path, precision="fp16") as ref:
        assert ref.backend.precision.name == "fp16"


def test_missing_or_corrupt_artifacts(tmp_path, tiny_artifacts):
    with pytest.raises(ArtifactError, match=r"nothing\.onnx not found; export it"):
        runtime.load(tmp_path / "nothing.onnx")  # the missing file is named, not its manifest
    with pytest.raises(ArtifactError, match=r"nothing\.engine not found; build it"):
        runtime.load(tmp_path / "nothing.engine")
    manifest = tiny_artifacts["fp32"]
    copy = tmp_path / manifest.artifact
    copy.write_bytes(manifest.artifact_path.read_bytes()[:500])  # truncated
    (tmp_path / manifest.path.name).write_text(manifest.path.read_text())
    with pytest.raises(ArtifactError, match=r"is 500 bytes, its manifest says \d+: truncated or changed since export; "
                                             r"re-export it with: crn-export --random-weights"):
        runtime.load(copy)
    changed = bytearray(manifest.artifact_path.read_bytes())
    changed[-1] ^= 1  # same size, one bit changed: only the digest tells
    copy.write_bytes(bytes(changed))
    with pytest.raises(ArtifactError, match="does not have the SHA-256 its manifest records: changed since export"):
        runtime.load(copy)
    copy.unlink()
    with pytest.raises(ArtifactError, match="missing beside its manifest"):
        runtime.load(tmp_path / manifest.path.name)
    with pytest.raises(UsageError, match="expected an exported .onnx or .engine"):
        runtime.load(tmp_path / "model.engine.bin")


def test_unknown_device_is_refused(tiny_artifacts):
    with pytest.raises(UsageError, match="unknown ONNX Runtime device"):
        runtime.load(tiny_artifacts["fp32"].artifact_path, device="tpu")


def test_onnxruntime_io_binding_reads_label_maps_in_place(tiny_artifacts):
    from types import SimpleNamespace

    ids = street_layouts(1, *TINY_RES, seed=7)
    with runtime.load(tiny_artifacts["fp32"].artifact_path, device="cpu") as synth:
        bound = synth.backend.submit_device(ids).result()  # host memory via DLPack, for the CPU provider
        assert np.array_equal(bound, synth.run_ids(ids))
        value = synth.backend.submit_device(ids, output="device").result()
        assert np.array_equal(value.numpy(), bound)
        cuda_array = SimpleNamespace(__cuda_array_interface__={"shape": ids.shape, "typestr": "|u1", "version": 3,
                                                               "data": (ids.ctypes.data, False)})
        with pytest.raises(UsageError, match="runs on cpu but the label map is in cuda memory"):
            synth.backend.submit_device(cuda_array)
        with pytest.raises(UsageError, match="must be uint8"):
            synth.backend.submit_device(ids.astype(np.int32))


def test_onnxruntime_gpu_providers_run_on_the_chosen_gpu(tiny_artifacts):
    from crn_deploy.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(tiny_artifacts["fp16"].artifact_path, "tensorrt", gpu=1)
    trt, cuda, cpu = backend._providers("tensorrt")
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["device_id"] == 1
    assert trt[1]["trt_engine_cache_path"].endswith("ort-trt-cache")
    assert cuda == ("CUDAExecutionProvider", {"device_id": 1}) and cpu == "CPUExecutionProvider"
    assert backend._providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="gpu must be a CUDA device number"):
        OnnxRuntimeBackend(tiny_artifacts["fp16"].artifact_path, "cuda", gpu=-1)
