"""A deployment box installed with ``pip install '.[ort,rtx,openvino]'`` (no torch) runs artifacts exported by
the full environment: the runtime, crn-run and crn-bench work there, crn-build makes TensorRT-RTX engines and
OpenVINO CPU engines there (checked against the FP32 artifact on ONNX Runtime), and every command that needs
torch says so in one line and exits 2.

The torch-free environment is conftest's ``thin_python``: ``.venv-thin/`` at the repository root or the Python
named by CRN_THIN_PYTHON; CI sets CRN_REQUIRE_THIN=1, so there a missing one fails.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import THIN_PYTHON, export_tiny


@pytest.fixture(scope="module")
def thin(thin_python):
    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(thin_python), *args], capture_output=True, text=True, timeout=300, cwd=cwd)

    return run


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_source):
    out = tmp_path_factory.mktemp("thin-engines")
    export_tiny(tiny_source, out)
    return out


def test_every_runtime_side_module_imports_without_torch(thin):
    """Everything but the model side, training and ONNX writing: crn_deploy.artifacts.engine (crn-build) too."""
    code = ("import importlib, pkgutil, crn_deploy, sys\n"
            "skip = ('crn_deploy.models.', 'crn_deploy.training.', 'crn_deploy.artifacts.exporter',\n"
            "        'crn_deploy.graph')\n"
            "names = [m.name for m in pkgutil.walk_packages(crn_deploy.__path__, 'crn_deploy.') "
            "if not m.name.startswith(skip)]\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(len(names), 'torch' in sys.modules)")
    result = thin("-c", code)
    assert result.returncode == 0, result.stderr
    count, has_torch = result.stdout.split()
    assert int(count) > 20 and has_torch == "False"


def test_the_runtime_and_crn_run_work_without_torch(thin, engines, tmp_path):
    fp16 = engines / "tiny-64x96-fp16.onnx"
    code = ("import numpy as np; from crn_deploy import runtime; from crn_deploy.data.synthetic import street_layout\n"
            f"s = runtime.load({str(fp16)!r}); print(s(street_layout(120, 200, seed=1)).shape)")
    result = thin("-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "(120, 200, 3)", result.stderr
    out = tmp_path / "frames"
    result = thin("-m", "crn_deploy.cli.run", str(fp16), "--input", "synthetic", "--frames", "3", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.png"))) == 3


def test_crn_bench_without_torch_times_artifacts_and_compares_fp16_with_fp32(thin, engines, tmp_path):
    report_path = tmp_path / "bench.json"
    result = thin("-m", "crn_deploy.cli.bench", str(engines), "--warmup", "0", "--iterations", "2", "--duration", "0",
                  "--samples", "2", "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    assert "torch is not installed (pip install 'crn-deploy[export]'" in result.stdout
    rows = {row["precision"]: row for row in json.loads(report_path.read_text())["rows"]}
    assert set(rows) == {"fp16", "fp32"} and all(r["backend"] == "onnxruntime-cpu" for r in rows.values())
    assert rows["fp16"]["parity"]["reference"].startswith("tiny-64x96-fp32.onnx")
    assert 40 < rows["fp16"]["parity"]["psnr_db"] < 100 and "parity" not in rows["fp32"]


def test_a_spade_artifact_with_a_style_input_runs_and_benches_without_torch(thin, tmp_path):
    from crn_deploy.cli.export import main as export_main

    out = tmp_path / "spade"
    assert export_main(["--preset", "spade-tiny", "--random-weights", "--option", "use_vae=True", "--option",
                        "z_dim=8", "--precision", "fp32", "--precision", "fp16", "--out", str(out)]) == 0
    fp16 = out / "spade-tiny-seed0-32x64-fp16.onnx"
    code = ("import numpy as np; from crn_deploy import runtime; from crn_deploy.data.synthetic import scenes\n"
            "ids, inst = scenes('cityscapes-labelids', 1, 32, 64, seed=3)\n"
            f"s = runtime.load({str(fp16)!r}, style_seed=2)\n"
            "a, b = s(ids[0, 0], instances=inst[0, 0]), s(ids[0, 0], instances=inst[0, 0])\n"
            "c = s(ids[0, 0], instances=inst[0, 0], z=np.ones(8, np.float32))\n"
            "print(a.shape, np.array_equal(a, b), np.array_equal(a, c))")
    result = thin("-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "(32, 64, 3) True False", result.stderr
    report_path = tmp_path / "bench.json"
    result = thin("-m", "crn_deploy.cli.bench", str(out), "--warmup", "0", "--iterations", "2", "--duration", "0",
                  "--samples", "2", "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    rows = {row["precision"]: row for row in json.loads(report_path.read_text())["rows"]}
    assert rows["fp16"]["parity"]["reference"].startswith("spade-tiny-seed0-32x64-fp32.onnx")
    assert rows["fp16"]["parity"]["psnr_db"] >= 45


def test_a_posgen_artifact_paints_its_larger_picture_without_torch(thin, tmp_path):
    from crn_deploy.cli.export import main as export_main

    out = tmp_path / "posgen"
    assert export_main(["--preset", "posgen-tiny", "--random-weights", "--res", "32x64", "--out-res", "64x128",
                        "--precision", "fp32", "--out", str(out)]) == 0
    artifact = out / "posgen-tiny-seed0-32x64-out64x128-fp32.onnx"
    code = ("from crn_deploy import runtime; from crn_deploy.data.synthetic import scenes\n"
            "ids, inst = scenes('cityscapes-labelids', 1, 32, 64, seed=3)\n"
            f"s = runtime.load({str(artifact)!r})\n"
            "print(s(ids[0, 0], instances=inst[0, 0]).shape, s.picture_size((64, 128)))")
    result = thin("-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "(64, 128, 3) (128, 256)", result.stderr


def _needs(thin, module: str, library: str) -> None:
    """Skip where the torch-free environment lacks ``module`` (fail under CRN_REQUIRE_THIN, as CI runs)."""
    if thin("-c", f"import {module}").returncode != 0:
        message = f"no {library} in {THIN_PYTHON}: .venv-thin/bin/pip install -e '.[ort,rtx,openvino]'"
        if os.environ.get("CRN_REQUIRE_THIN"):
            pytest.fail(message)
        pytest.skip(message)


def _built(thin, engines: Path, folder: Path, stem: str, target: str, *options: str) -> dict:
    """crn-build in the torch-free environment, on a copy of the artifact: the engine's record in its manifest."""
    for suffix in (".onnx", ".json"):
        shutil.copy(engines / f"{stem}{suffix}", folder)
    result = thin("-m", "crn_deploy.cli.build", str(folder / f"{stem}.onnx"), "--target", target, *options)
    assert result.returncode == 0, result.stderr
    return json.loads((folder / f"{stem}.json").read_text())[f"{target}_engine"]


def test_crn_build_makes_rtx_engines_without_torch_or_a_gpu(thin, engines, tmp_path):
    _needs(thin, "tensorrt_rtx", "TensorRT-RTX")
    record = _built(thin, engines, tmp_path, "tiny-64x96-fp16", "rtx", "--compute-capability", "86,89")
    assert record["runtime"] == "TensorRT-RTX" and record["compute_capabilities"] == ["8.6", "8.9"]
    assert (tmp_path / "tiny-64x96-fp16.rtx.engine").stat().st_size == record["size_bytes"]


def test_crn_build_makes_openvino_engines_without_torch_checked_against_the_fp32_artifact(thin, engines, tmp_path):
    _needs(thin, "openvino", "OpenVINO")
    record = _built(thin, engines, tmp_path, "tiny-64x96-fp32", "openvino", "--precision", "fp32")
    assert record["parity"]["reference"] == "tiny-64x96-fp32.onnx (onnxruntime-cpu)"
    assert record["parity"]["max_abs"] <= 1 and record["inference_precision"] == "fp32"
    engine = tmp_path / "tiny-64x96-fp32.openvino.engine"
    code = ("from crn_deploy import runtime; from crn_deploy.data.synthetic import street_layout\n"
            f"s = runtime.load({str(engine)!r}); print(s.backend.name, s(street_layout(120, 200, seed=1)).shape)")
    result = thin("-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "openvino (120, 200, 3)", result.stderr


@pytest.mark.parametrize("command", [
    ["export", "model.pt"], ["train"], ["demo"], ["import", "ckpt/model.ckpt", "-o", "x.pt"],
    ["run", "ENGINE", "--input", "synthetic", "--output", "o", "--reference"],
    ["bench", "ENGINES", "--backend", "torch"],
])
def test_commands_that_need_torch_say_so_in_one_line(thin, engines, tmp_path, command):
    args = [str(engines / "tiny-64x96-fp32.onnx") if a == "ENGINE" else str(engines) if a == "ENGINES" else a
            for a in command]
    result = thin("-m", f"crn_deploy.cli.{args[0].replace('import', 'import_tf')}", *args[1:], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch" in lines[0] and "pip install 'crn-deploy[" in lines[0], result.stderr
