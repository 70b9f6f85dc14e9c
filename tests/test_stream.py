import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from crn_deploy import runtime
from crn_deploy.cli.run import main as run_main
from crn_deploy.data.streams import CallbackSink, FolderSink, IterableSource, SyntheticSource, VideoSink
from crn_deploy.data.synthetic import street_layout
from crn_deploy.errors import CrnError
from crn_deploy.labels import CITYSCAPES
from crn_deploy.runtime.stream import StreamOptions, run_stream

from .conftest import TINY_RES


@pytest.fixture()
def synth(tiny_artifacts):
    with runtime.load(tiny_artifacts["fp32"].artifact_path, device="cpu") as s:
        yield s


def _maps(n, size=TINY_RES):
    return [street_layout(*size, seed=100 + i) for i in range(n)]


def _read_video(path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(bgr[..., ::-1])


def test_label_video_in_video_out_same_count_and_order(tmp_path, synth, tiny_artifacts):
    maps = _maps(12)
    labels_video = VideoSink(tmp_path / "labels.mkv", fps=10)  # FFV1: lossless, as label videos must be
    for ids in maps:
        labels_video.write(CITYSCAPES.ids_to_colors(ids))
    labels_video.close()
    argv = [str(tiny_artifacts["fp32"].artifact_path), "--input", str(tmp_path / "labels.mkv"),
            "--output", str(tmp_path / "out.avi"), "--device", "cpu"]
    assert run_main(argv) == 0
    frames = _read_video(tmp_path / "out.avi")
    expected = [synth(ids) for ids in maps]
    assert len(frames) == len(maps)
    for i, frame in enumerate(frames):  # lossy output: each frame is nearest to its own map's picture
        distances = [np.mean((frame.astype(float) - e) ** 2) for e in expected]
        assert int(np.argmin(distances)) == i


def test_folder_in_folder_out_exact(tmp_path, synth, tiny_artifacts):
    (tmp_path / "in").mkdir()
    maps = _maps(5)
    for i, ids in enumerate(maps):
        cv2.imwrite(str(tmp_path / "in" / f"m{i:02d}.png"), ids)
    assert run_main([str(tiny_artifacts["fp32"].artifact_path), "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == 5
    for path, ids in zip(written, maps, strict=True):
        assert np.array_equal(cv2.imread(str(path))[..., ::-1], synth(ids))


def test_live_policy_drops_the_oldest_under_a_slow_stage(synth):
    slow = CallbackSink(lambda frame: time.sleep(0.03))
    options = StreamOptions(policy="live", fps=200, queue_size=2, skip_identical=False)
    stats = run_stream(synth, IterableSource(_maps(60)), slow, options)
    assert stats.frames_in == 60 and stats.dropped > 0 and stats.deadline_misses > 0
    assert stats.frames_out + stats.dropped == 60
    lossless = run_stream(synth, IterableSource(_maps(20)), CallbackSink(lambda f: time.sleep(0.01)),
                          StreamOptions(queue_size=2))
    assert lossless.frames_out == 20 and lossless.dropped == 0


def test_identical_maps_are_not_synthesized_again(synth):
    ids = _maps(1)[0]
    seen = []
    stats = run_stream(synth, IterableSource([ids] * 5 + [_maps(2)[1]]), CallbackSink(seen.append))
    assert stats.skipped == 4 and stats.frames_out == 6
    assert all(np.array_equal(seen[0], frame) for frame in seen[:5]) and not np.array_equal(seen[0], seen[5])


def test_an_error_in_a_stage_is_reported_and_the_video_is_finalised(tmp_path, synth):
    def failing_source():
        yield from _maps(3)
        raise OSError("camera unplugged")

    sink = VideoSink(tmp_path / "partial.avi", fps=10)
    with pytest.raises(CrnError, match="the decode stage failed after .* frames: OSError: camera unplugged"):
        run_stream(synth, IterableSource(failing_source()), sink)
    assert len(_read_video(tmp_path / "partial.avi")) == 3 and [p.name for p in tmp_path.iterdir()] == ["partial.avi"]


def test_letterbox_keeps_the_aspect_and_returns_the_input_size(synth):
    wide = street_layout(60, 300, seed=5)  # 1:5 into a 2:3 engine
    frames = []
    run_stream(synth, IterableSource([wide]), CallbackSink(frames.append), StreamOptions(resize="letterbox"))
    assert frames[0].shape == (60, 300, 3)
    engine = []
    run_stream(synth, IterableSource([wide]), CallbackSink(engine.append),
               StreamOptions(resize="letterbox", output_size="engine"))
    assert engine[0].shape == (*TINY_RES, 3)


def test_side_by_side_and_synthetic_scene(tmp_path, synth):
    FolderSink(tmp_path)  # creates the folder
    frames = []
    run_stream(synth, SyntheticSource(32, 48, frames=4), CallbackSink(frames.append),
               StreamOptions(side_by_side=True, overlay_fps=True))
    assert len(frames) == 4 and frames[0].shape == (32, 96, 3)


def test_usage_errors(tiny_artifacts, tmp_path, capsys):
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    with pytest.raises(SystemExit) as e:
        run_main([artifact, "--input", "synthetic", "--output", str(tmp_path / "o.mp4"), "--policy", "live"])
    assert e.value.code == 2 and "needs a frame rate" in capsys.readouterr().err
    assert run_main([artifact, "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o.mp4")]) == 2
    assert "nothing: no such folder or file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_main([artifact, "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o.mp4")]) == 2
    assert "no label images" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "label.jpg"), street_layout(*TINY_RES, seed=1))
    assert run_main([artifact, "--input", str(tmp_path / "label.jpg"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err  # the reason and the fix, in one line
    assert "label.jpg cannot be label maps (lossy compression" in err and "save them as PNG" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        run_main([artifact, "--input", "synthetic", "--output", str(tmp_path / "o.mp4"), "--gpu", "-1"])
    assert e.value.code == 2 and "--gpu must be a CUDA device number" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_readable_video(tmp_path, tiny_artifacts):
    out = tmp_path / "long.avi"
    process = subprocess.Popen([sys.executable, "-m", "crn_deploy.cli.run", str(tiny_artifacts["fp32"].artifact_path),
                                "--input", "synthetic", "--frames", "100000", "--output", str(out), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    assert 0 < len(_read_video(out)) < 100000


@pytest.mark.slow
def test_memory_stays_flat_over_thousands_of_frames(tmp_path, tiny_artifacts):
    code = f"""
import numpy as np
from crn_deploy import runtime
from crn_deploy.data.streams import CallbackSink, IterableSource
from crn_deploy.data.synthetic import street_layout
from crn_deploy.measure.bench import host_memory_mib
from crn_deploy.runtime.stream import run_stream
maps = [street_layout(32, 48, seed=i) for i in range(7)]
rss = []
def frames(n):
    for i in range(n):
        if i % 500 == 0:
            rss.append(host_memory_mib()[0])
        yield maps[i % 7]
with runtime.load({str(tiny_artifacts["fp32"].artifact_path)!r}, device="cpu") as synth:
    stats = run_stream(synth, IterableSource(frames(4000)), CallbackSink(lambda f: None))
print(stats.frames_out, rss[1], rss[-1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    frames, early, late = int(out[0]), float(out[1]), float(out[2])
    assert frames == 4000
    assert late - early < 20, f"RSS grew from {early:.1f} to {late:.1f} MiB over 3000 frames"


def test_the_simulation_loop_example_runs(tiny_artifacts):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "simulation_loop.py"
    result = subprocess.run([sys.executable, str(example), str(tiny_artifacts["fp32"].artifact_path), "--steps", "10"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "direct calls:" in result.stdout and "10 frames in" in result.stdout


def test_crn_run_can_stream_through_the_pytorch_reference(tiny_artifacts, tmp_path, capsys):
    assert run_main([str(tiny_artifacts["fp32"].artifact_path), "--reference", "--input", "synthetic:64x96",
                     "--frames", "3", "--output", str(tmp_path / "ref")]) == 0
    assert len(list((tmp_path / "ref").glob("*.png"))) == 3 and "3 frames in, 3 out" in capsys.readouterr().out


def _label_tree(root):
    """Two cities of Cityscapes-style label files, plus a colour PNG."""
    for city, seed in (("aachen", 1), ("bonn", 2)):
        (root / city).mkdir(parents=True)
        ids = street_layout(*TINY_RES, seed=seed)
        cv2.imwrite(str(root / city / f"{city}_000000_gtFine_labelIds.png"), ids)  # train ids as label ids: fine here
    colours = CITYSCAPES.ids_to_colors(street_layout(*TINY_RES, seed=3))
    cv2.imwrite(str(root / "aachen" / "colour.png"), colours[..., ::-1])


def test_folders_and_globs_of_label_images_keep_their_names(tmp_path, tiny_artifacts):
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    _label_tree(tmp_path / "data")
    out = tmp_path / "out"
    assert run_main([artifact, "--input", str(tmp_path / "data" / "**" / "*_labelIds.png"), "--output", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "aachen/aachen_000000_gtFine_labelIds.png", "bonn/bonn_000000_gtFine_labelIds.png"]
    folder_out = tmp_path / "folder-out"
    assert run_main([artifact, "--input", str(tmp_path / "data" / "aachen"), "--output", str(folder_out)]) == 0
    assert sorted(p.name for p in folder_out.iterdir()) == ["aachen_000000_gtFine_labelIds.png", "colour.png"]


def test_a_double_star_takes_any_number_of_folders_as_the_object_store_tools_do():
    from crn_deploy.data.storage import matching

    names = ["a_labelIds.png", "aachen/b_labelIds.png", "val/aachen/c_labelIds.png", "val/aachen/c_instanceIds.png"]
    assert matching(names, "**/*_labelIds.png") == names[:3]  # Cityscapes' gtFine/<split>/<city>/ included
    assert matching(names, "val/**/*_labelIds.png") == ["val/aachen/c_labelIds.png"]
    assert matching(names, "*/*_labelIds.png") == ["aachen/b_labelIds.png"]  # one * stays within a folder
    assert matching(names, "*") == names[:1]


def test_writing_pictures_over_the_label_images_is_refused(tmp_path, tiny_artifacts, capsys):
    _label_tree(tmp_path / "data")
    folder = tmp_path / "data" / "bonn"
    before = (folder / "bonn_000000_gtFine_labelIds.png").read_bytes()
    assert run_main([str(tiny_artifacts["fp32"].artifact_path), "--input", str(folder), "--output", str(folder)]) == 2
    assert "would overwrite the label image" in capsys.readouterr().err
    assert (folder / "bonn_000000_gtFine_labelIds.png").read_bytes() == before


def test_jpeg_saved_colour_labels_are_counted_or_refused(tmp_path, tiny_artifacts, capsys):
    folder = tmp_path / "labels"
    folder.mkdir()
    colors = CITYSCAPES.ids_to_colors(street_layout(*TINY_RES, seed=4))[..., ::-1]
    cv2.imwrite(str(folder / "a.png"), cv2.imdecode(cv2.imencode(".jpg", colors)[1], cv2.IMREAD_COLOR))
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "out")]) == 0
    said = "".join(capsys.readouterr())
    assert said.count("outside the 'cityscapes' palette") == 1 and "commonest" in said  # said once
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "o2"), "--strict-colors"]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "outside the 'cityscapes' palette" in err and len(err.strip().splitlines()) == 1


def test_id_maps_with_ids_past_the_label_set_are_warned_of_once_or_refused(tmp_path, tiny_artifacts, capsys):
    folder = tmp_path / "labels"
    folder.mkdir()
    for i in range(3):
        ids = street_layout(*TINY_RES, seed=i)
        ids[:, : TINY_RES[1] // 3] = 50  # a third of each map in another label space
        cv2.imwrite(str(folder / f"{i}.png"), ids)
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "out")]) == 0
    said = "".join(capsys.readouterr())
    assert said.count("past the 'cityscapes' label set") == 1 and "id 50 on" in said
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "o2" / "nested"),
                     "--strict-labels"]) == 2
    err = capsys.readouterr().err
    assert "0.png" in err and "ids past the 'cityscapes' label set" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()  # the failed run leaves no empty folders it created


def test_bad_label_files_among_good_ones_are_named_and_skipped_and_every_other_picture_is_written(
        tmp_path, tiny_artifacts, capsys):
    folder = tmp_path / "labels"
    folder.mkdir()
    for i in (0, 2, 4):
        cv2.imwrite(str(folder / f"{i}.png"), street_layout(*TINY_RES, seed=i))
    (folder / "1.png").write_bytes(b"")  # empty: OpenCV asserts on it
    (folder / "3.png").write_bytes((folder / "2.png").read_bytes()[:40])  # cut short
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "out"), "--strict-labels"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "2.png", "4.png"]  # nothing half-done
    captured = capsys.readouterr()
    said = [line for line in captured.out.splitlines() if "skipped, no picture for it" in line]
    assert len(said) == 2 and "1.png: the file is empty" in said[0] and "3.png: not an image" in said[1]
    assert captured.err.startswith("crn-run: error: 2 of 5 label files could not be read and have no picture")
    assert len(captured.err.splitlines()) == 1  # neither a traceback nor OpenCV's own warnings


def test_a_failed_run_leaves_folders_that_were_there(tmp_path, tiny_artifacts):
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "0.png").write_bytes(b"not a picture")
    (tmp_path / "ready").mkdir()
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "ready")]) == 1
    assert (tmp_path / "ready").is_dir()  # the user's own folder stays, empty as it was
    assert run_main([artifact, "--input", str(folder), "--output", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()  # one it made for nothing is removed
