"""What makes the run record true without a cluster: pictures that name their artifact (a PNG text chunk, the same
bytes for the same picture), a record reconciled with a listing of the output (killed runs, pictures cut short,
pictures gone, another artifact's), durable writes (the file synced before its rename, the folder after), and a
cluster address nothing listens on refused in one line. The faults on a real cluster: test_ray_faults.py."""

import json
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from crn_deploy import files
from crn_deploy.data.images import ARTIFACT_KEY, encode_picture, png_text
from crn_deploy.data.storage import Store
from crn_deploy.data.streams import FolderSink

from .ports import free_port

SHA_A, SHA_B = "a" * 64, "b" * 64


def _picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 24, 3), dtype=np.uint8)


def test_a_picture_names_its_artifact_in_a_text_chunk_and_a_cut_one_is_not_complete():
    import cv2

    rgb = _picture(0)
    stamped = encode_picture(rgb, artifact_sha256=SHA_A)
    assert stamped == encode_picture(rgb, artifact_sha256=SHA_A)  # the same picture, the same bytes
    assert png_text(stamped) == {ARTIFACT_KEY: SHA_A} and png_text(encode_picture(rgb)) == {}
    assert np.array_equal(cv2.imdecode(np.frombuffer(stamped, np.uint8), cv2.IMREAD_COLOR)[..., ::-1], rgb)
    pil = pytest.importorskip("PIL.Image")
    import io

    assert pil.open(io.BytesIO(stamped)).text == {ARTIFACT_KEY: SHA_A}  # what other readers see
    for cut in (0, 8, 40, len(stamped) // 2, len(stamped) - 1):
        assert png_text(stamped[:cut]) is None
    flipped = bytearray(stamped)
    flipped[len(stamped) // 2] ^= 0xFF  # inside the image data: its CRC no longer matches
    assert png_text(bytes(flipped)) is None
    assert png_text(stamped + b"\0" * 4) is None
    assert png_text(b"\0" * len(stamped)) is None


def _record_with(folder: Path, runs: list[dict], written: list[dict] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "crn-run-record.json").write_text(json.dumps({"runs": runs, "written": list(written)}))


def _run(run_id: str, started: float, sha: str, state: str = "finished") -> dict:
    from datetime import datetime, timezone

    return {"run": run_id, "artifact_sha256": sha, "state": state,
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat()}


def test_reconciling_the_record_with_the_output_after_a_killed_run(tmp_path):
    """A run killed before its rows reached the record: its pictures are found, checked whole, and given to it by
    time; one cut short is dropped and named for painting again; an entry whose picture is gone is dropped;
    another artifact's picture and an unnamed one keep what they say."""
    from crn_deploy.scale.record import RunRecord

    out = tmp_path / "out"
    earlier = time.time() - 100
    _record_with(out, [_run("old", earlier - 50, SHA_B), _run("killed", earlier, SHA_A, state="running")],
                 [{"name": "gone", "run": "old", "artifact_sha256": SHA_B, "bytes": 10}])
    sink = FolderSink(out, SHA_A)
    for i in range(3):
        sink.write(_picture(i), f"city/m{i}")
    (out / "city" / "m2.png").write_bytes((out / "city" / "m2.png").read_bytes()[:50])  # cut short
    FolderSink(out, SHA_B).write(_picture(7), "other")
    FolderSink(out).write(_picture(8), "unnamed")
    (out / ".hidden.png").write_bytes(b"not a picture of the output")

    record = RunRecord(str(out), Store(out))
    assert record.abandon_running() == ["killed"]
    found = record.reconcile({"city/m0": "in/m0.png"})
    assert found.damaged == ["city/m2"] and found.found == 4 and found.gone == 1
    assert found.artifacts == {"city/m0": SHA_A, "city/m1": SHA_A, "other": SHA_B, "unnamed": None}
    assert record.pictures["city/m0"]["run"] == "killed" and record.pictures["city/m0"]["input"] == "in/m0.png"
    assert record.pictures["other"]["run"] is None  # written after "killed" started, but not by its artifact
    record.begin(Path("a.onnx"), SHA_A, "in", 1)
    record.finish("finished", 2, 1.0)
    saved = json.loads((out / "crn-run-record.json").read_text())
    assert [r["state"] for r in saved["runs"]] == ["finished", "abandoned", "finished"]
    assert saved["runs"][1]["written"] == 2
    assert sorted(p["name"] for p in saved["written"]) == ["city/m0", "city/m1", "other", "unnamed"]

    again = RunRecord(str(out), Store(out)).reconcile({})
    assert again.found == 0 and again.damaged == ["city/m2"]  # what the record knows is trusted by size and time
    (out / "city" / "m1.png").write_bytes(b"")  # a picture emptied under its name (a power loss without fsync)
    assert RunRecord(str(out), Store(out)).reconcile({}).damaged == ["city/m1", "city/m2"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="a live driver is told by /proc (Linux)")
def test_a_run_whose_driver_still_runs_here_is_refused_and_one_whose_driver_is_gone_is_abandoned(tmp_path):
    """Two runs into one output at once would each rewrite the other's record: a run the record says is running,
    whose driver is the live process under its number (same boot, PID namespace and start time), refuses the next
    run in one line, before anything is written. Anything else is abandoned: the number given to a later process,
    another boot or namespace, a record without them, a zombie, a process gone."""
    import re
    import subprocess
    import sys

    from crn_deploy.errors import UsageError
    from crn_deploy.scale.record import RunRecord, process_identity

    out = tmp_path / "out"

    def running(run_id: str, pid: int, **identity) -> dict:
        driver = {"host": socket.gethostname(), "pid": pid, **process_identity(pid), **identity}
        return {**_run(run_id, time.time(), SHA_A, state="running"), "driver": driver}

    def abandoned(run: dict) -> list[str]:
        _record_with(out, [run])
        return RunRecord(str(out), Store(out)).abandon_running()

    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = running("live", driver.pid)
        _record_with(out, [live])
        before = (out / "crn-run-record.json").read_bytes()
        with pytest.raises(UsageError, match=re.escape(f"another run is writing into {out} (run live, process "
                                                       f"{driver.pid} on this machine")) as refused:
            RunRecord(str(out), Store(out)).abandon_running()
        assert "\n" not in str(refused.value) and "--output" in str(refused.value)
        assert (out / "crn-run-record.json").read_bytes() == before
        ticks = live["driver"]["start_ticks"]
        assert abandoned(running("reused", driver.pid, start_ticks=ticks - 1)) == ["reused"]
        assert abandoned(running("rebooted", driver.pid, boot_id="another boot")) == ["rebooted"]
        assert abandoned(running("contained", driver.pid, pid_namespace="pid:[1]")) == ["contained"]
        older = running("older", driver.pid)
        older["driver"] = {"host": socket.gethostname(), "pid": driver.pid}
        assert abandoned(older) == ["older"]
        assert abandoned(running("mine", os.getpid())) == ["mine"]
        driver.kill()
        os.waitid(os.P_PID, driver.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: a zombie
        assert abandoned(live) == ["live"]
    finally:
        driver.kill()
        driver.wait()
    assert abandoned(live) == ["live"]
    record = RunRecord(str(tmp_path / "mine"), Store(tmp_path / "mine"))
    record.begin(Path("a.onnx"), SHA_A, "in", 1)  # a run names its driver so
    saved = json.loads((tmp_path / "mine" / "crn-run-record.json").read_text())["runs"][0]["driver"]
    assert saved == {"host": socket.gethostname(), "pid": os.getpid(), **process_identity(os.getpid())}
    assert set(saved) == {"host", "pid", "boot_id", "pid_namespace", "start_ticks"}


def test_a_write_is_synced_before_its_rename_and_its_folder_after(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (synced.append(f"rename {Path(b).name}"), real_replace(a, b)))
    files.write_files_atomic([(tmp_path / "a.png", b"1"), (tmp_path / "b.png", b"22")])
    names = [s if s.startswith("rename ") else Path(s).name for s in synced]
    assert names[0].startswith(".a.png.crn") and names[1].startswith(".b.png.crn")  # temporaries, synced whole
    assert names[2:] == ["rename a.png", "rename b.png", tmp_path.name]  # then renamed, then their folder synced
    synced.clear()
    with files.atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"333")
    assert Path(synced[0]).name.startswith(".c.bin.crn") and synced[1:] == ["rename c.bin", str(tmp_path.resolve())]
    synced.clear()
    assert not files.write_files_atomic([(tmp_path / "d.png", b"4")], may_publish=lambda: False)
    assert not (tmp_path / "d.png").exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    monkeypatch.setenv(files.FSYNC_SWITCH, "0")
    synced.clear()
    files.write_bytes_atomic(tmp_path / "e.png", b"5")
    assert synced == ["rename e.png"] and (tmp_path / "e.png").read_bytes() == b"5"


def test_crn_run_pictures_name_their_artifact_and_reference_ones_do_not(tiny_artifacts, tmp_path):
    from crn_deploy.cli.run import main as run_main
    from crn_deploy.runtime import artifact_sha256

    artifact = tiny_artifacts["fp32"].artifact_path
    assert run_main([str(artifact), "--input", "synthetic", "--frames", "2", "--output", str(tmp_path / "o")]) == 0
    pictures = sorted((tmp_path / "o").glob("*.png"))
    assert len(pictures) == 2
    assert all(png_text(p.read_bytes()) == {ARTIFACT_KEY: artifact_sha256(artifact)} for p in pictures)
    assert artifact_sha256(artifact) == files.sha256_file(artifact)
    assert artifact_sha256(tiny_artifacts["fp32"].path) == artifact_sha256(artifact)  # its manifest names it


def test_a_cluster_address_nothing_listens_on_is_refused_in_one_line(tiny_artifacts, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]'")
    from crn_deploy.cli.run import main as run_main

    port = free_port()  # free a moment ago: nothing listens there
    (tmp_path / "in").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "in" / "m.png"), np.zeros((64, 96), np.uint8))
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    for address, words in ((f"127.0.0.1:{port}", "nothing listens there"), ("127.0.0.1", "HOST:PORT")):
        code = run_main([artifact, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--ray",
                         address])
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1 and f"--ray {address}" in err and words in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="a live driver is told by /proc (Linux)")
def test_crn_run_ray_refuses_an_output_a_live_run_writes_before_ray_starts(tiny_artifacts, tmp_path, capsys):
    """The refusal comes before Ray is asked: with a cluster address nothing listens on, the user hears of the
    live run, not of the cluster."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]'")
    import subprocess
    import sys

    import cv2

    from crn_deploy.cli.run import main as run_main
    from crn_deploy.scale.record import process_identity

    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "m.png"), np.zeros((64, 96), np.uint8))
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _record_with(tmp_path / "out", [{**_run("live", time.time(), SHA_A, state="running"), "driver": {
            "host": socket.gethostname(), "pid": driver.pid, **process_identity(driver.pid)}}])
        code = run_main([str(tiny_artifacts["fp32"].artifact_path), "--input", str(tmp_path / "in"), "--output",
                         str(tmp_path / "out"), "--ray", "127.0.0.1:9"])
    finally:
        driver.kill()
        driver.wait()
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "another run is writing into" in err, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["crn-run-record.json"]


def test_png_text_reads_chunks_in_any_order():
    """tEXt may stand anywhere between IHDR and IEND (PNG spec 5.6): read one placed after the image data."""
    png = encode_picture(_picture(3))
    chunk = b"tEXt" + ARTIFACT_KEY.encode() + b"\0" + SHA_B.encode()
    import zlib

    late = png[:-12] + struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[-12:]
    assert png_text(late) == {ARTIFACT_KEY: SHA_B}
