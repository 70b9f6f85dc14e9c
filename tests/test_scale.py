"""Past one machine, on a local Ray instance: batch synthesis, `crn-run --ray` (outputs byte-identical to a
single-process run, a rerun skips, a worker killed mid-run is retried and every input still yields exactly one
picture, object storage in and out, workers that cannot be placed, a worker's error). One Ray instance for the
module; Ray Serve is tested in test_serve.py, in a Ray of its own, so that its replicas never hold the CPUs these
runs are sized for."""

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from crn_deploy import files, runtime
from crn_deploy.cli.export import main as export_main
from crn_deploy.data.synthetic import cityscapes_scene

pytestmark = pytest.mark.slow  # a local Ray instance and a dozen runs on it: three minutes on 2 cores
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' (or the ray extra)")

from crn_deploy.scale import batch  # noqa: E402
from crn_deploy.errors import UsageError  # noqa: E402
from crn_deploy.files import write_synced  # noqa: E402

from .ray_processes import actor_pids, alive, listening, loopback, ray_titles  # noqa: E402


@pytest.fixture(scope="module")
def cluster(s3):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """spade-tiny (label + instance maps) at 32x64 and, heavier, at 256x512, FP32 ONNX."""
    out = tmp_path_factory.mktemp("scale-engines")
    for res in ("32x64", "256x512"):
        assert export_main(["--preset", "spade-tiny", "--random-weights", "--res", res, "--precision", "fp32",
                            "--out", str(out), "--samples", "1"]) == 0
    return {"small": out / "spade-tiny-seed0-32x64-fp32.onnx", "large": out / "spade-tiny-seed0-256x512-fp32.onnx"}


def _label_folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    """Cityscapes-style label and instance files in two city folders."""
    for i in range(count):
        city = root / "gtFine" / f"city{i % 2}"
        city.mkdir(parents=True, exist_ok=True)
        labels, instances = cityscapes_scene(*size, seed=100 + i)
        cv2.imwrite(str(city / f"c_{i:06d}_000019_gtFine_labelIds.png"), labels)
        cv2.imwrite(str(city / f"c_{i:06d}_000019_gtFine_instanceIds.png"), instances.astype(np.uint16))
    return root / "gtFine"


def _single_process(artifact: Path, folder: Path, out: Path) -> dict[str, bytes]:
    """What plain crn-run writes for the same files (its folder sink, each picture naming the artifact):
    {relative path: bytes}."""
    from crn_deploy.data.streams import FolderSink, FolderSource

    sink = FolderSink(out, runtime.artifact_sha256(artifact))
    with runtime.load(artifact, device="cpu") as synth:
        for name, labels in FolderSource(str(folder / "**" / "*_labelIds.png"), synth.label_set):
            sink.write(synth(labels.ids, instances=labels.instances), name)
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.png")}


def _written(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.png")}


def test_ray_data_pictures_equal_a_single_process_run_and_a_rerun_skips(cluster, artifacts, tmp_path):
    folder = _label_folder(tmp_path / "in", 10, (32, 64))
    expected = _single_process(artifacts["small"], folder, tmp_path / "single")
    out = tmp_path / "ray"
    options = batch.BatchOptions(workers=2, gpus_per_worker=0)
    summary = batch.synthesize_files(artifacts["small"], str(folder / "**" / "*_labelIds.png"), out, options)
    assert summary.written == 10 and summary.skipped == 0
    assert _written(out) == expected and len(expected) == 10
    record = batch.read_record(out)
    assert sorted(r["name"] for r in record["written"]) == sorted(n.removesuffix(".png") for n in expected)
    again = batch.synthesize_files(artifacts["small"], str(folder / "**" / "*_labelIds.png"), out, options)
    assert again.written == 0 and again.skipped == 10
    (out / "city0" / "c_000000_000019_gtFine_labelIds.png").unlink()
    patched = batch.synthesize_files(artifacts["small"], str(folder / "**" / "*_labelIds.png"), out, options)
    assert patched.written == 1 and _written(out) == expected
    options.overwrite = True
    assert batch.synthesize_files(artifacts["small"], str(folder / "**" / "*_labelIds.png"), out, options).written == 10


def test_crn_run_ray_writes_what_crn_run_writes_and_refuses_what_it_cannot_do(cluster, artifacts, tmp_path, capsys):
    from crn_deploy.cli.run import main as run_main

    folder = _label_folder(tmp_path / "in", 4, (32, 64))
    pattern = str(folder / "**" / "*_labelIds.png")
    assert run_main([str(artifacts["small"]), "--input", pattern, "--output", str(tmp_path / "single")]) == 0
    assert run_main([str(artifacts["small"]), "--input", pattern, "--output", str(tmp_path / "ray"), "--ray",
                     "--workers", "2"]) == 0
    assert "4 label maps: 4 pictures written, 0 already there" in capsys.readouterr().out
    assert _written(tmp_path / "ray") == _written(tmp_path / "single")
    for extra in (["--input", "synthetic", "--output", "o", "--ray"],
                  ["--input", pattern, "--output", "o.mp4", "--ray"],
                  ["--input", pattern, "--output", "o", "--workers", "2"],
                  ["--input", pattern, "--output", "o", "--ray", "--style-seed", "3"]):  # a picture's pixels change
        with pytest.raises(SystemExit) as stopped:
            run_main([str(artifacts["small"]), *extra])
        assert stopped.value.code == 2
    assert "--ray" in capsys.readouterr().err


def test_crn_run_ray_takes_object_store_prefixes_with_and_without_their_slash(cluster, s3, artifacts, tmp_path):
    from crn_deploy.cli.run import main as run_main

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"m{i}.png"), cityscapes_scene(32, 64, seed=200 + i)[0])
        s3.upload_file(str(folder / f"m{i}.png"), "maps", f"prefix/m{i}.png")
    assert run_main([str(artifacts["small"]), "--input", str(folder), "--output", str(tmp_path / "single")]) == 0
    expected = {p.name: p.read_bytes() for p in (tmp_path / "single").glob("*.png")}
    for given, output in (("s3://maps/prefix/", "s3://maps/ray-a"), ("s3://maps/prefix", "s3://maps/ray-b/")):
        assert run_main([str(artifacts["small"]), "--input", given, "--output", output, "--ray"]) == 0
        prefix = output.removeprefix("s3://maps/").rstrip("/") + "/"
        assert {k: v for k, v in _objects(s3, prefix).items() if k.endswith(".png")} == expected


def test_a_bad_label_file_among_good_ones_is_named_skipped_and_recorded_on_ray(cluster, artifacts, tmp_path, capsys):
    from crn_deploy.cli.run import main as run_main

    folder = _label_folder(tmp_path / "in", 3, (32, 64))
    bad = next(folder.rglob("*_labelIds.png"))
    bad.write_bytes(b"")
    out = tmp_path / "out"
    assert run_main([str(artifacts["small"]), "--input", str(folder / "**" / "*_labelIds.png"), "--output", str(out),
                     "--ray"]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: the file is empty (0 bytes); skipped, no picture for it" in captured.out
    assert "1 of 3 label files could not be read" in captured.err and len(captured.err.splitlines()) == 1
    assert len(list(out.rglob("*.png"))) == 2
    run = batch.read_record(out)["runs"][-1]
    assert run["state"] == "finished" and run["written"] == 2 and len(run["unreadable"]) == 1


def test_colours_outside_the_palette_are_counted_and_said_once_on_ray(cluster, artifacts, tmp_path, capsys):
    """A colour label map saved as JPEG has colours between the palette's: the run says so once, as plain crn-run
    does (the count used to be dropped by the writing stage), or, with --strict-colors, refuses it in one line."""
    from crn_deploy.cli.run import main as run_main
    from crn_deploy.data.synthetic import street_layout
    from crn_deploy.labels import CITYSCAPES

    folder = tmp_path / "labels"
    folder.mkdir()
    colors = CITYSCAPES.ids_to_colors(street_layout(32, 64, seed=4))[..., ::-1]
    cv2.imwrite(str(folder / "a.png"), cv2.imdecode(cv2.imencode(".jpg", colors)[1], cv2.IMREAD_COLOR))
    cv2.imwrite(str(folder / "b.png"), colors)
    assert run_main([str(artifacts["small"]), "--input", str(folder), "--output", str(tmp_path / "out"),
                     "--ray"]) == 0
    said = capsys.readouterr().out
    assert said.count("had colours outside the cityscapes-labelids palette (void)") == 1, said
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    # refused instead: in one line naming the file, as plain crn-run refuses it, not in a worker's traceback
    assert run_main([str(artifacts["small"]), "--input", str(folder), "--output", str(tmp_path / "strict"),
                     "--ray", "--strict-colors"]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "outside the" in err and len(err.strip().splitlines()) == 1, err
    assert batch.read_record(tmp_path / "strict")["runs"][-1]["state"] == "failed"


def test_workers_the_cluster_cannot_place_are_named_once_and_the_run_goes_on_without_them(
        cluster, artifacts, tmp_path, monkeypatch):
    """Three painters of one CPU each on a two-CPU cluster: the two placed paint every map, and the run says once,
    while their pictures keep coming, with what each asks and what the cluster has, that the third has not started
    (it never hangs on it)."""
    monkeypatch.setattr(batch, "PLACING_S", 5.0)  # time enough for two workers to start on a loaded machine
    folder = _label_folder(tmp_path / "in", 96, (256, 512))
    said: list[str] = []
    summary = batch.synthesize_files(artifacts["large"], str(folder / "**" / "*_labelIds.png"), tmp_path / "out",
                                     batch.BatchOptions(workers=3, cpus_per_worker=1, batch_size=2), said.append)
    assert summary.seconds > batch.PLACING_S, "the run must outlast the wait for the message to be due"
    assert summary.written == 96 and _written(tmp_path / "out").keys() == _written_names(folder)
    assert len(summary.pids) == 2
    waiting = [line for line in said if "Ray worker(s) not started" in line]
    assert len(waiting) == 1 and waiting[0].startswith("1 of 3") and "each asks for 1 CPU(s)" in waiting[0], said


def test_a_worker_this_machine_cannot_hold_is_refused_in_one_line_before_anything_is_written(artifacts, tmp_path):
    """A local Ray instance never grows: a worker asking for a GPU it lacks, or more CPUs than it has, would wait
    forever. (Beside the module's Ray, in a command of its own: a Ray this process already runs may be a cluster.)"""
    import subprocess
    import sys

    folder = _label_folder(tmp_path / "in", 2, (32, 64))
    for flags, asks in ((["--gpus-per-worker", "4096"], "0 CPU(s) and 4096 GPU(s)"),
                        (["--cpus-per-worker", "4096", "--gpus-per-worker", "0"], "4096 CPU(s) and 0 GPU(s)")):
        done = subprocess.run([sys.executable, "-m", "crn_deploy.cli.run", str(artifacts["small"]), "--input",
                               str(folder), "--output", str(tmp_path / "out"), "--ray", *flags],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr[-3000:]
        assert f"each Ray worker asks for {asks}, and this machine has" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_workers_error_stops_the_others_writing_before_the_run_says_it_failed(cluster, artifacts, tmp_path):
    """--strict-colors refuses one map of forty while two painters have batches in hand: the error comes out as
    the project's own, and once it has, no picture appears and no temporary is left; the record lists exactly
    the pictures there."""
    from crn_deploy.data.synthetic import street_layout
    from crn_deploy.labels import CITYSCAPES

    folder = tmp_path / "labels"
    folder.mkdir()
    for i in range(40):
        colors = CITYSCAPES.ids_to_colors(street_layout(32, 64, seed=i))[..., ::-1]
        if i == 21:
            colors = cv2.imdecode(cv2.imencode(".jpg", colors)[1], cv2.IMREAD_COLOR)
        cv2.imwrite(str(folder / f"m{i:02d}.png"), colors)
    out = tmp_path / "out"
    options = batch.BatchOptions(workers=2, cpus_per_worker=1, batch_size=2, strict_colors=True)
    with pytest.raises(UsageError, match="m21.png"):
        batch.synthesize_files(artifacts["small"], str(folder), out, options)
    there = sorted(p.name for p in out.glob("*.png"))
    time.sleep(1.5)
    assert sorted(p.name for p in out.glob("*.png")) == there and "m21.png" not in there
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    record = batch.read_record(out)
    assert record["runs"][-1]["state"] == "failed"
    assert sorted(r["name"] + ".png" for r in record["written"]) == there


def _written_names(folder: Path) -> set[str]:
    """The pictures' names crn-run gives the label files of ``folder`` (each the label file's: both are PNG)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*_labelIds.png")}


def test_an_openvino_engine_paints_on_cpu_workers_as_a_single_process_run_does(cluster, artifacts, tmp_path):
    """A CPU engine takes the CPU painters' path: no GPU asked for, maps painted at once on its own streams."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install -e '.[test]'")
    import shutil

    from crn_deploy.artifacts.openvino_build import OpenVINOBuildOptions, build_engine
    from crn_deploy.manifest import Manifest
    from crn_deploy.precisions import FP32
    from crn_deploy.targets import OPENVINO

    engines = tmp_path / "engines"
    engines.mkdir()
    for path in (artifacts["small"], artifacts["small"].with_suffix(".json")):
        shutil.copy(path, engines)
    manifest = build_engine(Manifest.read(engines / artifacts["small"].with_suffix(".json").name),
                            OpenVINOBuildOptions(FP32), log=lambda _: None)
    engine = engines / manifest.engine_record(OPENVINO).file
    folder = _label_folder(tmp_path / "in", 6, (32, 64))
    expected = _single_process(engine, folder, tmp_path / "single")
    out = tmp_path / "ray"
    summary = batch.synthesize_files(engine, str(folder / "**" / "*_labelIds.png"), out, batch.BatchOptions(workers=1))
    assert summary.written == 6 and _written(out) == expected


def test_numpy_shards_and_parquet_in_parquet_out(cluster, artifacts, tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    maps = [cityscapes_scene(32, 64, seed=60 + i) for i in range(5)]
    np.save(tmp_path / "run1.npy", np.stack([m[0] for m in maps[:3]]))
    np.savez(tmp_path / "run2.npz", labels=np.stack([m[0] for m in maps[3:]]),
             instances=np.stack([m[1] for m in maps[3:]]))
    out = tmp_path / "from-shards"
    summary = batch.synthesize_files(artifacts["small"], str(tmp_path / "*.np[yz]"), out,
                                     batch.BatchOptions(workers=1, gpus_per_worker=0))
    assert summary.written == 5
    with runtime.load(artifacts["small"], device="cpu") as synth:
        plain = [synth(m[0]) for m in maps]
        with_instances = [synth(m[0], instances=m[1]) for m in maps]
    read = [cv2.imread(str(out / name))[..., ::-1] for name in
            ("run1/000000.png", "run1/000002.png", "run2/000000.png", "run2/000001.png")]
    assert np.array_equal(read[0], plain[0]) and np.array_equal(read[1], plain[2])
    assert np.array_equal(read[2], with_instances[3]) and np.array_equal(read[3], with_instances[4])

    table = pyarrow.table({"name": [f"m{i}" for i in range(5)],
                           "labels_png": [cv2.imencode(".png", m[0])[1].tobytes() for m in maps],
                           "instances_png": [cv2.imencode(".png", m[1].astype(np.uint16))[1].tobytes() for m in maps]})
    pq.write_table(table, tmp_path / "maps.parquet")
    written = tmp_path / "pictures.parquet"
    summary = batch.synthesize_files(artifacts["small"], str(tmp_path / "maps.parquet"), written,
                                     batch.BatchOptions(workers=1, gpus_per_worker=0))
    assert summary.written == 5 and summary.record.endswith("pictures.parquet.record.json")
    rows = pq.read_table(written).to_pylist()
    got = {r["name"]: cv2.imdecode(np.frombuffer(r["image_png"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
           for r in rows}
    assert sorted(got) == [f"m{i}" for i in range(5)]
    assert all(np.array_equal(got[f"m{i}"], with_instances[i]) for i in range(5))
    folder = tmp_path / "from-parquet"
    options = batch.BatchOptions(workers=1, gpus_per_worker=0)
    assert batch.synthesize_files(artifacts["small"], str(tmp_path / "maps.parquet"), folder, options).written == 5
    (folder / "m1.png").unlink()
    again = batch.synthesize_files(artifacts["small"], str(tmp_path / "maps.parquet"), folder, options)
    assert (again.written, again.skipped) == (1, 4)
    assert np.array_equal(cv2.imread(str(folder / "m1.png"))[..., ::-1], with_instances[1])
    with pytest.raises(Exception, match="exists; pass --overwrite"):
        batch.synthesize_files(artifacts["small"], str(tmp_path / "maps.parquet"), written,
                               batch.BatchOptions(workers=1, gpus_per_worker=0))


def test_the_write_gate_publishes_nothing_once_closed_and_holds_the_stop_for_a_batch_inside(cluster, tmp_path,
                                                                                             monkeypatch):
    """What makes "stopped" true on an interrupt: a writing task publishes a batch only through the run's gate; the
    driver closes it and waits for the tasks inside (here one that entered and has not left, and one whose worker
    died inside, let out by the retry of its batch)."""
    rows = {"name": np.array(["a", "b"]), "input": np.array(["a", "b"]), "unreadable": np.array(["", ""], dtype=object),
            "image": batch._column([np.zeros((4, 6, 3), np.uint8), np.full((4, 6, 3), 9, np.uint8)])}
    gate = batch.open_gate(ray)
    assert ray.get(gate.enter.remote("task-1"))  # a task publishing its batch
    gate.leave.remote("task-2")  # one that was interrupted before its enter reached the gate
    assert batch.close_gate(ray, gate, wait_s=0.3) == 1  # the stop waits for the first...
    gate.leave.remote("task-1")
    assert batch.close_gate(ray, gate, wait_s=5) == 0  # ...until it is through
    shut = batch.write_stage(rows, str(tmp_path / "shut"), "a" * 64, gate)
    assert list(shut["output"]) == ["", ""] and not list(tmp_path.rglob("*.png"))  # nothing half-written either
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    # a task already writing its temporaries when the stop comes is inside: the stop waits while it removes them
    closing, seen_inside = batch.open_gate(ray), []

    def write_then_stop(path, data):
        write_synced(path, data)
        if not seen_inside:
            seen_inside.append(ray.get(closing.close.remote()))

    monkeypatch.setattr(files, "write_synced", write_then_stop)
    cut = batch.write_stage(rows, str(tmp_path / "cut"), "a" * 64, closing)
    monkeypatch.undo()
    assert seen_inside == [1] and list(cut["output"]) == ["", ""] and ray.get(closing.count.remote()) == 0
    assert not list((tmp_path / "cut").iterdir())  # its temporaries removed, nothing published
    # a worker that died inside the gate never leaves it: Ray retries its batch, and the retry lets it out
    retried = batch.open_gate(ray)
    dead_attempt = batch.gate_token(str(tmp_path / "retried"), [batch.picture_name(n) for n in rows["name"]])
    assert ray.get(retried.enter.remote(dead_attempt)) and batch.close_gate(ray, retried, wait_s=0.3) == 1
    assert list(batch.write_stage(rows, str(tmp_path / "retried"), "a" * 64, retried)["output"]) == ["", ""]
    assert ray.get(retried.count.remote()) == 0  # the stop need not wait its STOP_WAIT_S out
    open_gate = batch.open_gate(ray)
    written = batch.write_stage(rows, str(tmp_path / "open"), "a" * 64, open_gate)
    assert [Path(o).name for o in written["output"]] == ["a.png", "b.png"] and ray.get(open_gate.count.remote()) == 0
    assert list(written["bytes"]) == [(tmp_path / "open" / n).stat().st_size for n in ("a.png", "b.png")]


def test_a_batch_that_reaches_a_painter_after_the_stop_is_not_painted_and_lets_a_dead_attempt_out(
        cluster, artifacts, tmp_path, monkeypatch):
    """Once the gate is closed, a painter reads and paints nothing more: a batch handed out before the stop, or a
    killed worker's batch that Ray retries, only leaves the gate, so the stop does not wait for a batch's painting."""
    from crn_deploy.manifest import Manifest, manifest_for

    folder = _label_folder(tmp_path / "in", 2, (32, 64))
    found = batch._find_inputs(None, str(folder / "**" / "*_labelIds.png"), artifacts["small"])
    out, gate = str(tmp_path / "out"), batch.open_gate(ray)
    reading = batch._reading(batch.BatchOptions(), Manifest.read(manifest_for(artifacts["small"])))
    painter = batch.FolderPainter({"artifact": str(artifacts["small"]), "device": "cpu", "threads": 1,
                                   "at_once": 1}, reading, out, found.digest, gate)
    dead_attempt = batch.gate_token(out, [batch.picture_name(r["name"]) for r in found.rows])
    assert ray.get(gate.enter.remote(dead_attempt)) and batch.close_gate(ray, gate, wait_s=0.3) == 1
    monkeypatch.setattr(batch, "read_stage", lambda *a, **k: pytest.fail("a batch was read after the stop"))
    rows = painter.paint(found.rows)
    assert list(rows["output"]) == ["", ""] and list(rows["name"]) == found.names
    assert ray.get(gate.count.remote()) == 0 and not Path(out).exists()


def test_a_worker_killed_mid_run_is_retried_and_every_input_yields_one_picture(cluster, artifacts, tmp_path):
    folder = _label_folder(tmp_path / "in", 24, (256, 512))
    out = tmp_path / "ray"
    pattern = str(folder / "**" / "*_labelIds.png")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=batch.synthesize_files(
        artifacts["large"], pattern, out, batch.BatchOptions(workers=2, gpus_per_worker=0, batch_size=2))))
    runner.start()
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob("*.png")):
        time.sleep(0.05)
    victims = actor_pids("Painter")
    assert victims, "no painter found to kill"
    killed = sorted(victims)[0]
    os.kill(killed, signal.SIGKILL)
    written_before = len(list(out.rglob("*.png")))
    runner.join(300)
    assert not runner.is_alive() and "summary" in result
    assert written_before < 24  # the kill came mid-run
    expected = _single_process(artifacts["large"], folder, tmp_path / "single")
    assert _written(out) == expected and len(expected) == 24  # each exactly once, byte-identical
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert len({r["name"] for r in batch.read_record(out)["written"]}) == 24


def test_crn_run_ray_reads_simulator_frames_through_a_label_mapping(cluster, tiny_artifacts, tmp_path):
    """The reading stage decodes with the mapping: CARLA's raw frames and a Replicator output folder on Ray give
    what plain crn-run gives for the train-id maps."""
    from crn_deploy.cli.run import main as run_main
    from crn_deploy.data.synthetic import street_layout

    from .simulator_frames import bgra, replicator_folder, tags_of

    artifact = str(tiny_artifacts["fp32"].artifact_path)
    scenes = [street_layout(64, 96, seed=s) for s in (1, 2, 3)]
    for folder in ("train", "raw"):
        (tmp_path / folder).mkdir()
    for i, scene in enumerate(scenes):
        cv2.imwrite(str(tmp_path / "train" / f"f{i}.png"), scene)
        cv2.imwrite(str(tmp_path / "raw" / f"f{i}.png"), bgra(tags_of(scene), seed=i))
    replicator_folder(tmp_path / "replicator", scenes)
    assert run_main([artifact, "--input", str(tmp_path / "train"), "--output", str(tmp_path / "single")]) == 0
    expected = [p.read_bytes() for p in sorted((tmp_path / "single").glob("*.png"))]
    for folder, extra in (("raw", ["--label-map", "carla"]), ("replicator", [])):
        out = tmp_path / f"ray-{folder}"
        assert run_main([artifact, "--input", str(tmp_path / folder), "--output", str(out), "--ray", *extra]) == 0
        assert [p.read_bytes() for p in sorted(out.glob("*.png"))] == expected and len(expected) == 3


def test_crn_run_ray_on_one_machine_listens_on_loopback_only_says_only_its_own_lines_and_stops_ray(
        artifacts, tmp_path):
    """A local Ray for one machine, its own even where RAY_ADDRESS (or another Ray on the machine) names another
    cluster: every process of it listens on 127.0.0.1, Ray's own output stays out of the terminal, and the command
    leaves no Ray process behind."""
    import subprocess
    import sys

    psutil = pytest.importorskip("psutil")
    folder = _label_folder(tmp_path / "in", 40, (32, 64))
    process = subprocess.Popen([sys.executable, "-m", "crn_deploy.cli.run", str(artifacts["small"]), "--input",
                                str(folder / "**" / "*_labelIds.png"), "--output", str(tmp_path / "out"), "--ray"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "RAY_ADDRESS": "127.0.0.1:9"})  # nothing listens there
    seen, descendants, titles = set(), set(), set()
    while process.poll() is None:
        seen.update(listening(process.pid))
        with contextlib.suppress(psutil.Error):
            descendants.update(psutil.Process(process.pid).children(recursive=True))
        titles.update(ray_titles(descendants))
        time.sleep(0.1)
    out, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert any(name == "gcs_server" for name, _, _ in seen)  # looked while Ray ran
    assert [s for s in seen if not loopback(s[1])] == []
    assert err == "" and all(line.startswith(("crn-run: ", "Ray ")) for line in out.splitlines()), out
    assert len(list((tmp_path / "out").rglob("*.png"))) == 40
    # one process per painter, beside the write gate's, and nothing of Ray Data's: their starts cost seconds
    assert any(t.startswith("FolderPainter") for t in titles), titles
    assert {t.split(".")[0] for t in titles} <= {"FolderPainter", "WriteGate", "IDLE"}, titles
    deadline = time.time() + 10  # Ray's processes end with the command (a raylet may take a moment)
    while [p for p in descendants if alive(p)] and time.time() < deadline:
        time.sleep(0.2)
    assert [p.name() for p in descendants if alive(p)] == []


def _keys(s3, prefix: str) -> list[str]:
    return [o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket="maps", Prefix=prefix).get("Contents", [])]


def _objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object below ``prefix``, as listed; one removed between the listing and its fetch (a running job's
    write check comes and goes) is left out."""
    found = {}
    for key in _keys(s3, prefix):
        try:
            found[key] = s3.get_object(Bucket="maps", Key=prefix + key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
    return found


def test_object_storage_in_and_out_byte_identical_with_a_killed_worker_and_a_rerun_that_skips(
        cluster, s3, artifacts, tmp_path):
    maps = 64  # 32 batches of 2: the kill comes while the painters still have batches in hand
    folder = _label_folder(tmp_path / "in", maps, (256, 512))
    for path in folder.rglob("*.png"):
        s3.upload_file(str(path), "maps", f"in/gtFine/{path.relative_to(folder)}")
    expected = _single_process(artifacts["large"], folder, tmp_path / "single")
    pattern, out = "s3://maps/in/gtFine/**/*_labelIds.png", "s3://maps/out"
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=batch.synthesize_files(
        artifacts["large"], pattern, out, batch.BatchOptions(workers=2, gpus_per_worker=0, batch_size=2))))
    runner.start()
    deadline = time.time() + 120
    while time.time() < deadline and not any(k.endswith(".png") for k in _keys(s3, "out/")):
        time.sleep(0.05)
    victims = actor_pids("Painter")
    written_before = sum(k.endswith(".png") for k in _keys(s3, "out/"))
    assert victims, "no painter found to kill"
    os.kill(sorted(victims)[0], signal.SIGKILL)
    runner.join(300)
    assert written_before < maps  # the kill came mid-run
    assert not runner.is_alive() and result["summary"].written == maps
    pictures = {k: v for k, v in _objects(s3, "out/").items() if k.endswith(".png")}
    assert pictures == expected  # each exactly once, byte-identical to single-process crn-run
    record = json.loads(_objects(s3, "out/")["crn-run-record.json"])
    assert len(record["written"]) == maps and record["runs"][-1]["state"] == "finished"
    again = batch.synthesize_files(artifacts["large"], pattern, out, batch.BatchOptions(workers=1, gpus_per_worker=0))
    assert again.written == 0 and again.skipped == maps
    record = json.loads(_objects(s3, "out/")["crn-run-record.json"])
    assert len(record["runs"]) == 2 and {p["run"] for p in record["written"]} == {record["runs"][0]["run"]}
