"""Shared fixtures: tiny models and artifacts exported once per session."""

from __future__ import annotations

import os
from dataclasses import replace

# Ray starts a local instance by itself when one of its APIs is called while none runs. After a test module's
# ray.shutdown(), a Ray Data or Serve thread still winding down would start one that nothing stops, and its
# driver exits the whole test process when that instance's GCS goes away. Ray reads this once, at import.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
# Under pytest-xdist (-n 2) each worker process runs its own PyTorch: one OpenMP thread each, so that the workers share
# the cores instead of oversubscribing them. Read once, when torch loads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from crn_deploy.families import find_preset

TINY_RES = (64, 96)
ROOT = Path(__file__).resolve().parents[1]
# The torch-free environment: .venv-thin/ at the repository root (the README's test command makes it) or the Python
# named by CRN_THIN_PYTHON. CI sets CRN_REQUIRE_THIN=1, so there a missing one fails.
THIN_PYTHON = Path(os.environ.get("CRN_THIN_PYTHON", ROOT / ".venv-thin" / "bin" / "python"))


@pytest.fixture(scope="session")
def thin_python() -> Path:
    """The torch-free environment's Python (its commands lie beside it); a skip where there is none, a failure
    under CRN_REQUIRE_THIN."""
    if not THIN_PYTHON.is_file():
        message = (f"no torch-free environment at {THIN_PYTHON}: "
                   "python3 -m venv .venv-thin && .venv-thin/bin/pip install -e '.[ort,rtx,openvino]'")
        if os.environ.get("CRN_REQUIRE_THIN"):
            pytest.fail(message)
        pytest.skip(message)
    probe = subprocess.run([str(THIN_PYTHON), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None", f"{THIN_PYTHON} has torch: it cannot prove anything runs without it"
    return THIN_PYTHON


@pytest.fixture(scope="session")
def tiny_config():
    return find_preset("tiny")[1]


@pytest.fixture(scope="session")
def tiny_source(tiny_config):
    from crn_deploy.models.checkpoint import random_model

    return random_model(tiny_config, seed=3, preset_name="tiny")


@pytest.fixture(scope="session")
def tiny_k3_source(tiny_config):
    from crn_deploy.models.checkpoint import random_model

    return random_model(replace(tiny_config, k=3), seed=4)


def export_tiny(source, out_dir, *, precisions=("fp32", "fp16"), resolutions=(TINY_RES,), batch=1, name="tiny"):
    from crn_deploy.artifacts.exporter import ExportOptions, export_artifacts

    from crn_deploy.precisions import precision
    from crn_deploy.sizes import Sizes

    options = ExportOptions([Sizes.same(r) for r in resolutions], [precision(p) for p in precisions], out_dir, name,
                            batch, samples=2)
    return export_artifacts(source, options, log=lambda _: None)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_source):
    """fp32 and fp16 ONNX of the tiny model at 64x96, batch 1: {precision: Manifest}."""
    out = tmp_path_factory.mktemp("engines")
    return {m.precision: m for m in export_tiny(tiny_source, out)}


class CudaArrayOnly:
    """Exposes only an array's CUDA array interface (as Numba does)."""

    def __init__(self, array):
        self.array = array
        self.__cuda_array_interface__ = array.__cuda_array_interface__


class DLPackOnly:
    """Exposes only an array's DLPack protocol (as JAX does)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server on loopback (moto in server mode) with a bucket, and the standard environment
    (AWS_ENDPOINT_URL, keys, region) pointing at it, set before Ray starts so that its workers see it too."""
    moto_server = pytest.importorskip("moto.server", reason="moto is not installed: pip install -e '.[test]'")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket="maps")
    yield client
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    server.stop()
