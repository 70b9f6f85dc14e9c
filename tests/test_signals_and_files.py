"""Signals end every command promptly and cleanly; files get the mode open() gives; temporaries left
by killed runs are never taken for artifacts and are removed by the next run."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from crn_deploy.files import atomic_path, sweep_stale_temporaries, temporary_name, write_bytes_atomic
from crn_deploy.manifest import find_manifests

from .conftest import export_tiny


def _start(module: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"crn_deploy.cli.{module}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_line(process: subprocess.Popen, text: str) -> None:
    for line in process.stdout:
        if text in line:
            return
    pytest.fail(f"the command ended before printing {text!r}: {process.stderr.read()}")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_export_ends_it_at_once_and_leaves_no_file(tmp_path, sig, code):
    out = tmp_path / "engines"
    process = _start("export", "--preset", "small-256p", "--random-weights", "--res", "512x1024", "--samples", "4",
                     "--precision", "fp32", "--out", str(out))
    _wait_for_line(process, "small-256p-seed0")  # the PyTorch reference runs next, for seconds
    sent = time.monotonic()
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert process.returncode == code, stderr
    assert waited < 5, f"took {waited:.1f} s to act on the signal"  # it took the whole parity check before
    assert "interrupted" in stderr and "Traceback" not in stderr
    left = list(out.iterdir()) if out.exists() else []
    assert left == [], "an interrupted export must leave nothing, hidden files included"


@pytest.mark.slow
def test_ctrl_c_during_the_onnx_runtime_parity_phase_answers_within_about_a_second(tmp_path):
    out = tmp_path / "engines"
    process = _start("export", "--preset", "small-256p", "--random-weights", "--res", "512x1024", "--samples", "4",
                     "--precision", "fp32", "--out", str(out))
    _wait_for_line(process, "onnx.checker")  # ONNX Runtime's session and the parity forwards come next
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert process.returncode == 130, stderr
    assert waited < 3, f"took {waited:.1f} s to act on Ctrl-C in the parity phase"  # 0.1-0.4 s measured
    assert "interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_sigterm_finalises_crn_run_video(tmp_path, tiny_artifacts):
    out = tmp_path / "long.avi"
    process = _start("run", str(tiny_artifacts["fp32"].artifact_path), "--input", "synthetic", "--frames", "100000",
                     "--output", str(out), "--device", "cpu")
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    capture = cv2.VideoCapture(str(out))
    ok, frame = capture.read()
    assert ok and frame.shape[:2] == (64, 96)
    assert [p.name for p in tmp_path.iterdir()] == ["long.avi"]


def test_files_get_the_mode_a_plain_open_gives(tmp_path, tiny_source):
    previous = os.umask(0o027)
    try:
        manifests = export_tiny(tiny_source, tmp_path, precisions=("fp32",))
        write_bytes_atomic(tmp_path / "plain.bin", b"x")
        with open(tmp_path / "reference.bin", "wb"):
            pass
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "reference.bin").stat().st_mode)
    assert expected == 0o640
    for path in (manifests[0].artifact_path, manifests[0].path, tmp_path / "plain.bin"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.onnx") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_killed_runs_are_not_artifacts_and_are_swept(tmp_path, tiny_artifacts, capsys):
    folder = tiny_artifacts["fp32"].path.parent
    stale = temporary_name(folder / "tiny-64x96-fp32.json").name.replace(f"crn{os.getpid()}@", f"crn{_dead_pid()}@")
    (tmp_path / stale).write_text('{"schema": "crn-deploy/artifact"}')
    live = temporary_name(tmp_path / "other.onnx")  # this process's own: still being written
    live.write_bytes(b"")
    assert find_manifests(tmp_path) == []
    assert sweep_stale_temporaries(tmp_path) == [tmp_path / stale]
    assert live.exists() and not (tmp_path / stale).exists()
    assert "left by a run that was killed" in capsys.readouterr().err


def test_a_sweep_leaves_another_hosts_temporaries_alone(tmp_path, monkeypatch, capsys):
    """A folder shared by two machines: each sweeps only its own dead writers' temporaries."""
    from crn_deploy import files

    dead = _dead_pid()  # dead here; on another host the same number may be a live writer
    monkeypatch.setattr(files, "host_name", lambda: "node-b")
    theirs = temporary_name(tmp_path / "a.png").name.replace(f"crn{os.getpid()}@", f"crn{dead}@")
    (tmp_path / theirs).write_bytes(b"being written on node-b")
    monkeypatch.setattr(files, "host_name", lambda: "node-a")
    mine = temporary_name(tmp_path / "b.png").name.replace(f"crn{os.getpid()}@", f"crn{dead}@")
    (tmp_path / mine).write_bytes(b"left by a killed writer on node-a")
    assert "@node-b-" in theirs and "@node-a-" in mine
    assert sweep_stale_temporaries(tmp_path) == [tmp_path / mine]
    assert (tmp_path / theirs).exists()
    monkeypatch.setattr(files, "host_name", lambda: "node-b")
    assert sweep_stale_temporaries(tmp_path) == [tmp_path / theirs]
    capsys.readouterr()


def test_the_next_export_into_a_folder_removes_a_killed_runs_temporary(tmp_path):
    stale = tmp_path / f".x.onnx.crn{_dead_pid()}-0123abcd.tmp"
    stale.write_bytes(b"half an onnx")
    result = subprocess.run([sys.executable, "-m", "crn_deploy.cli.export", "--preset", "tiny", "--random-weights",
                             "--res", "64x96", "--out", str(tmp_path), "--no-engine"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and f"removed {stale}" in result.stderr
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["tiny-seed0-64x96-fp16.json",
                                                                 "tiny-seed0-64x96-fp16.onnx"]
