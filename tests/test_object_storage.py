"""Object storage as its ecosystem names it, single-process: crn-run reads label maps from an S3 prefix (with or
without its trailing slash), a glob or one object, and writes pictures under a prefix, against an S3-compatible
server on loopback (moto in server mode). The pictures are byte-identical to a local run's. (The Ray path's
object-storage tests are in test_scale.py.)"""

from __future__ import annotations

import cv2
import pytest

from crn_deploy.cli.run import main as run_main
from crn_deploy.data.synthetic import street_layout

from .conftest import TINY_RES

pytest.importorskip("pyarrow.fs", reason="object storage goes through pyarrow's filesystems")


@pytest.fixture(scope="module")
def uploaded(s3, tmp_path_factory):
    """Three label maps under s3://maps/flat/, two more under s3://maps/nested/a/ and a local copy of the flat ones."""
    local = tmp_path_factory.mktemp("flat")
    for i in range(3):
        cv2.imwrite(str(local / f"{i}.png"), street_layout(*TINY_RES, seed=i))
        s3.upload_file(str(local / f"{i}.png"), "maps", f"flat/{i}.png")
        s3.upload_file(str(local / f"{i}.png"), "maps", f"nested/a/{i}.png")
    return local


def _pictures(s3, prefix: str) -> dict[str, bytes]:
    """The objects below ``prefix`` but folder markers (``prefix/``, zero bytes, as S3 consoles make them)."""
    listed = s3.list_objects_v2(Bucket="maps", Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: s3.get_object(Bucket="maps", Key=o["Key"])["Body"].read() for o in listed
            if not o["Key"].endswith("/")}


@pytest.fixture(scope="module")
def local_pictures(uploaded, tiny_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out")
    assert run_main([str(tiny_artifacts["fp32"].artifact_path), "--input", str(uploaded), "--output", str(out)]) == 0
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize("given, output", [("s3://maps/flat/", "s3://maps/out-a/"), ("s3://maps/flat", "s3://maps/out-b"),
                                           ("s3://maps/flat/*.png", "s3://maps/out-c/")])
def test_a_prefix_with_or_without_its_slash_and_a_glob_read_and_write_as_local_folders_do(
        s3, uploaded, local_pictures, tiny_artifacts, given, output):
    assert run_main([str(tiny_artifacts["fp32"].artifact_path), "--input", given, "--output", output]) == 0
    prefix = output.removeprefix("s3://maps/").rstrip("/") + "/"
    assert _pictures(s3, prefix) == local_pictures  # byte for byte, and no write check left behind


def test_one_object_and_a_nested_prefix_that_needs_a_glob(s3, uploaded, local_pictures, tiny_artifacts, capsys):
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    assert run_main([artifact, "--input", "s3://maps/flat/1.png", "--output", "s3://maps/one"]) == 0
    assert _pictures(s3, "one/") == {"1.png": local_pictures["1.png"]}
    assert run_main([artifact, "--input", "s3://maps/nested", "--output", "s3://maps/never"]) == 2
    err = capsys.readouterr().err
    assert "no label images directly in s3://maps/nested; 3 lie in folders below it" in err
    assert "'s3://maps/nested/**/*.png'" in err and _pictures(s3, "never/") == {}
    assert run_main([artifact, "--input", "s3://maps/nested/**/*.png", "--output", "s3://maps/deep"]) == 0
    assert _pictures(s3, "deep/") == {f"a/{name}": data for name, data in local_pictures.items()}


def test_a_video_to_object_storage_is_refused_in_one_line(s3, uploaded, tiny_artifacts, capsys):
    assert run_main([str(tiny_artifacts["fp32"].artifact_path), "--input", "synthetic", "--frames", "1",
                     "--output", "s3://maps/video.mp4"]) == 2
    err = capsys.readouterr().err
    assert "videos are written to local files" in err and len(err.splitlines()) == 1
