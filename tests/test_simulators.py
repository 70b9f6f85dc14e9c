"""Simulators as clients: CARLA's raw tag frames and palette-converted frames and Omniverse Replicator's frames,
made here to their documented formats, read through label mappings into a model's label set by class name. Every
tag value of each CARLA table becomes the documented class in a train-id set and a label-id set; the three formats
of one scene paint the train-id map's picture byte for byte through crn-run, the runtime and the streaming loop,
with no unknown-colour notice; a mapping naming a class the set lacks is refused in one line."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from crn_deploy import runtime
from crn_deploy.cli.run import main as run_main
from crn_deploy.cli.serve import main as serve_main
from crn_deploy.data.label_mapping import load_label_map, resolve_label_map
from crn_deploy.data.label_maps import decode_label_map, find_label_files, label_batch
from crn_deploy.data.simulator_labels import CARLA_0_9_13_TAGS, CARLA_TAGS
from crn_deploy.data.streams import CallbackSink, CarlaSource, IterableSource, carla_tags
from crn_deploy.data.synthetic import street_layout
from crn_deploy.errors import CrnError, UsageError
from crn_deploy.labels import ADE20K, CITYSCAPES, CITYSCAPES_LABEL_IDS, VOID_ID, UnknownColors
from crn_deploy.runtime.stream import StreamOptions, run_stream
from crn_deploy.scale import cluster

from .conftest import TINY_RES
from .simulator_frames import bgra, palette_of, replicator_folder, replicator_frame, tags_of, write_png

ROOT = Path(__file__).resolve().parents[1]

# What each CARLA tag becomes, by class name, in a train-id set and in a label-id set (None: void): the choices
# docs/streaming.md explains. Tags 1-19 of 0.9.14+ are checked apart, against Cityscapes' own train-id order.
CHOICES_0_9_14 = {
    0: (None, "unlabeled"), 20: (None, "static"), 21: (None, "dynamic"), 22: (None, "unlabeled"),
    23: (None, "unlabeled"), 24: ("road", "road"), 25: ("terrain", "ground"), 26: ("building", "bridge"),
    27: (None, "rail track"), 28: ("fence", "guard rail"),
}
CHOICES_0_9_13 = {
    0: (None, "unlabeled"), 1: ("building",) * 2, 2: ("fence",) * 2, 3: (None, "unlabeled"), 4: ("person",) * 2,
    5: ("pole",) * 2, 6: ("road",) * 2, 7: ("road",) * 2, 8: ("sidewalk",) * 2, 9: ("vegetation",) * 2,
    10: ("car",) * 2, 11: ("wall",) * 2, 12: ("traffic sign",) * 2, 13: ("sky",) * 2, 14: ("terrain", "ground"),
    15: ("building", "bridge"), 16: (None, "rail track"), 17: ("fence", "guard rail"), 18: ("traffic light",) * 2,
    19: (None, "static"), 20: (None, "dynamic"), 21: (None, "unlabeled"), 22: ("terrain",) * 2,
}


def _expected_0_9_14(tag: int) -> tuple:
    return (CITYSCAPES.names[tag - 1],) * 2 if 1 <= tag <= 19 else CHOICES_0_9_14[tag]


TABLES = {"carla": (CARLA_TAGS, _expected_0_9_14), "carla-0.9.13": (CARLA_0_9_13_TAGS, CHOICES_0_9_13.__getitem__)}


def _class_id(label_set, name: str | None) -> int:
    return VOID_ID if name is None else label_set.names.index(name)


# the tables ------------------------------------------------------------------------------------------------------
def test_carla_tags_1_to_19_are_the_cityscapes_train_classes_in_their_colours():
    table = resolve_label_map("carla", CITYSCAPES).id_table
    for tag, _, colour, _ in CARLA_TAGS[1:20]:
        assert table[tag] == tag - 1 and colour == CITYSCAPES.colors[tag - 1]


@pytest.mark.parametrize("label_set", [CITYSCAPES, CITYSCAPES_LABEL_IDS], ids=lambda s: s.name)
@pytest.mark.parametrize("version", list(TABLES))
def test_every_carla_tag_becomes_the_documented_class_from_bytes_arrays_pngs_and_palette_frames(version, label_set):
    rows, expected_names = TABLES[version]
    assert [row[0] for row in rows] == list(range(len(rows)))  # every tag of the table, once
    tags = np.array([[row[0] for row in rows]], np.uint8)
    column = 0 if label_set is CITYSCAPES else 1
    expected = [[_class_id(label_set, expected_names(int(t))[column]) for t in tags[0]]]
    frame = bgra(tags)
    raw = resolve_label_map(version, label_set)
    unknown = UnknownColors()
    assert raw.map_ids(carla_tags(frame.tobytes(), tags.shape[1], 1), unknown=unknown).tolist() == expected
    assert raw.map_ids(carla_tags(frame)).tolist() == expected
    buffer = frame.tobytes()
    assert np.shares_memory(carla_tags(frame), frame)  # the tag channel is read in place: no copy of the frame
    assert np.shares_memory(carla_tags(buffer, tags.shape[1], 1), np.frombuffer(buffer, np.uint8))
    png = cv2.imencode(".png", frame)[1].tobytes()  # the sensor's BGRA buffer saved as an image: red holds the tag
    assert decode_label_map(png, label_set, label_map=raw).tolist() == expected
    palette = resolve_label_map(f"{version}-palette", label_set)
    colours = palette_of(tags, rows)
    assert label_batch(colours, label_set, label_map=palette, unknown=unknown)[0][0, 0].tolist() == expected
    saved = cv2.imencode(".png", cv2.cvtColor(colours, cv2.COLOR_RGB2BGRA))[1].tobytes()  # save_to_disk: BGRA
    assert decode_label_map(saved, label_set, label_map=palette).tolist() == expected
    assert unknown.unknown == 0 and not unknown.unmapped


def test_tags_past_the_table_become_void_and_are_counted_or_refused():
    tags = np.array([[1, 29, 29, 200]], np.uint8)
    unknown = UnknownColors()
    mapping = resolve_label_map("carla", CITYSCAPES)
    with pytest.warns(UserWarning, match=r"'carla' label mapping does not name \(id 29 on 2 px, id 200 on 1 px\)"):
        assert mapping.map_ids(tags, unknown=unknown).tolist() == [[0, VOID_ID, VOID_ID, VOID_ID]]
    assert unknown.unmapped == {"id 29": 2, "id 200": 1}
    with pytest.raises(UsageError, match="3 label pixels hold values the 'carla' label mapping does not name"):
        mapping.map_ids(tags, strict=True)
    colours = np.array([[[128, 64, 128], [1, 2, 3]]], np.uint8)
    with pytest.raises(UsageError, match=r"colours the 'carla-palette' label mapping does not name .*\(1, 2, 3\)"):
        resolve_label_map("carla-palette", CITYSCAPES).map_colors(colours, strict=True)


def test_a_mapping_naming_a_class_the_label_set_lacks_is_refused_in_one_line(tmp_path, tiny_artifacts, capsys,
                                                                             monkeypatch):
    with pytest.raises(UsageError) as refused:
        resolve_label_map("carla", ADE20K)
    assert "'traffic sign'" in str(refused.value) and "'ade20k' label set lacks" in str(refused.value)
    mapping = tmp_path / "sim.toml"
    mapping.write_text('[ids]\n1 = "road"\n2 = ["lane marking", "kerb"]\n')
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    code = run_main([artifact, "--input", "synthetic", "--frames", "1", "--output", str(tmp_path / "o"),
                     "--label-map", str(mapping)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "maps id 2 to 'lane marking' nor 'kerb', which the 'cityscapes' label set lacks" in err
    assert not (tmp_path / "o").exists()
    monkeypatch.setattr(cluster, "connected", lambda *a, **k: pytest.fail("crn-serve started Ray for a bad mapping"))
    assert serve_main([artifact, "--label-map", str(mapping)]) == 2  # refused before Ray starts
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "which the 'cityscapes' label set lacks" in err


def test_mapping_files_in_toml_and_json_are_the_same_data_and_bad_ones_are_refused(tmp_path):
    (tmp_path / "m.toml").write_text('name = "sim"\nchannel = "red"\n[ids]\n0 = "void"\n7 = ["guard rail", "fence"]\n'
                                     '[names]\nPedestrian = "person"\n')
    (tmp_path / "m.json").write_text(json.dumps({"name": "sim", "channel": "red", "ids": {"0": "void", "7": [
        "guard rail", "fence"]}, "names": {"Pedestrian": "person"}}))
    toml, js = load_label_map(tmp_path / "m.toml"), load_label_map(tmp_path / "m.json")
    assert (toml.ids, toml.names, toml.channel) == (js.ids, js.names, js.channel)
    for label_set, fence in ((CITYSCAPES, 4), (CITYSCAPES_LABEL_IDS, 14)):  # the first class the set has
        resolved = resolve_label_map(tmp_path / "m.toml", label_set)
        assert resolved.id_table[[0, 7]].tolist() == [VOID_ID, fence]
        assert resolved.class_of_labels("PEDESTRIAN") == label_set.names.index("person")
    colours = load_label_map(_file(tmp_path, "c.toml", '[colors]\n"#804080" = "road"\n"1, 2, 3" = "car"\n'))
    assert colours.colors == {(128, 64, 128): ("road",), (1, 2, 3): ("car",)}
    for text, message in (('[ids]\n300 = "road"\n', "ids 0..255"), ('[colours]\n', "unknown key 'colours'"),
                          ('[ids]\n1 = 5\n', "must name a class"), ('[ids\n', "is not valid TOML"),
                          ('[colors]\n"1,2" = "road"\n', '"R,G,B"'), ('name = "x"\n', "maps nothing"),
                          ('channel = "red"\n[colors]\n"1,2,3" = "road"\n', "goes with [ids]")):
        with pytest.raises(UsageError, match=message.replace("[", r"\[")):
            load_label_map(_file(tmp_path, "bad.toml", text))
    with pytest.raises(UsageError, match="not a built-in one \\(carla, carla-palette, carla-0.9.13"):
        load_label_map("carla-0.9.12")


def _file(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


def test_a_mapping_reads_only_what_it_maps():
    from crn_deploy.data.label_mapping import LabelMapping

    ids_only = LabelMapping("sim", ids={1: ("road",)}).resolve(CITYSCAPES)
    with pytest.raises(UsageError, match="the 'sim' label mapping names ids, not colours, so it cannot read colour"):
        label_batch(np.full((2, 2, 3), 5, np.uint8), CITYSCAPES, label_map=ids_only)
    with pytest.raises(UsageError, match=r"names colours, not ids.*\(CARLA's raw tag frames: --label-map carla\)"):
        label_batch(np.zeros((2, 2), np.uint8), CITYSCAPES, label_map=resolve_label_map("carla-palette", CITYSCAPES))


# Replicator -------------------------------------------------------------------------------------------------------
def test_replicator_frames_are_read_by_their_own_labels_whatever_ids_or_colours_they_hold():
    scene = street_layout(*TINY_RES, seed=5)
    for seed, colorize in ((1, False), (2, False), (3, True)):  # ids differ from frame to frame
        values, id_to_labels = replicator_frame(scene, seed, colorize)
        unknown = UnknownColors()
        assert np.array_equal(label_batch(values, CITYSCAPES, frame_labels=id_to_labels, unknown=unknown)[0][0, 0],
                              scene)
        png = cv2.imencode(".png", values[..., [2, 1, 0, 3]] if colorize else values)[1].tobytes()
        assert np.array_equal(decode_label_map(png, CITYSCAPES, frame_labels=json.dumps(id_to_labels).encode()),
                              scene)
        assert unknown.unknown == 0 and not unknown.unmapped
    values, id_to_labels = replicator_frame(scene, 4, False)
    first = next(k for k, v in id_to_labels.items() if v["class"] not in ("BACKGROUND", "UNLABELLED"))
    id_to_labels[first] = {"class": "bench,Car"}  # several labels: the first the set (or mapping) names
    assert (label_batch(values, CITYSCAPES, frame_labels=id_to_labels)[0][0, 0][values == int(first)] == 13).all()
    id_to_labels[first] = {"class": "pedestrian"}
    unknown = UnknownColors()
    with pytest.warns(UserWarning, match="the 'by class name' label mapping does not name \\(class 'pedestrian'"):
        mapped = label_batch(values, CITYSCAPES, frame_labels=id_to_labels, unknown=unknown)[0][0, 0]
    assert (mapped[values == int(first)] == VOID_ID).all() and "class 'pedestrian'" in unknown.unmapped
    synonyms = load_label_map(_mapping_json({"names": {"pedestrian": "person"}}))
    by_synonym = label_batch(values, CITYSCAPES, frame_labels=id_to_labels,
                             label_map=synonyms.resolve(CITYSCAPES))[0][0, 0]
    assert (by_synonym[values == int(first)] == CITYSCAPES.names.index("person")).all()
    with pytest.raises(UsageError, match="the frame's labels name ids .* but its image holds RGBA colours"):
        label_batch(np.zeros((2, 2, 4), np.uint8), CITYSCAPES, frame_labels={"0": {"class": "road"}})


def _mapping_json(data: dict) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "synonyms.json"
    path.write_text(json.dumps(data))
    return path


def test_a_replicator_output_folder_gives_its_semantic_frames_only(tmp_path):
    scenes = [street_layout(*TINY_RES, seed=s) for s in (1, 2, 3)]
    replicator_folder(tmp_path / "rep", scenes)
    files = find_label_files(tmp_path / "rep")
    assert files.names == ("semantic_segmentation_0000.png", "semantic_segmentation_0001.png",
                           "semantic_segmentation_0002.npy")
    for name, scene in zip(files.names, scenes, strict=True):
        assert np.array_equal(files.read(name, CITYSCAPES), scene)


# one scene, three clients, three paths ---------------------------------------------------------------------------
def test_three_simulator_formats_of_one_scene_paint_the_train_id_maps_picture(tiny_artifacts, tmp_path, capsys):
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    scenes = [street_layout(*TINY_RES, seed=s) for s in (1, 2, 3)]
    for folder in ("train", "raw", "palette"):
        (tmp_path / folder).mkdir()
    for i, scene in enumerate(scenes):
        write_png(tmp_path / "train" / f"f{i}.png", scene)
        tags = tags_of(scene)
        assert cv2.imwrite(str(tmp_path / "raw" / f"f{i}.png"), bgra(tags, seed=i))  # the sensor's BGRA, as saved
        write_png(tmp_path / "palette" / f"f{i}.png", np.dstack([palette_of(tags), np.full(tags.shape, 255,
                                                                                             np.uint8)]))
    replicator_folder(tmp_path / "replicator", scenes)
    runs = {"train": [], "raw": ["--label-map", "carla"], "palette": ["--label-map", "carla-palette"],
            "replicator": []}
    pictures = {}
    for folder, extra in runs.items():
        out = tmp_path / f"out-{folder}"
        assert run_main([artifact, "--input", str(tmp_path / folder), "--output", str(out), *extra]) == 0
        pictures[folder] = [p.read_bytes() for p in sorted(out.glob("*.png"))]
    said = "".join(capsys.readouterr())
    assert "warning" not in said  # no unknown-colour (or unnamed-value) notice
    assert len(pictures["train"]) == 3 and all(pictures[k] == pictures["train"] for k in runs)

    with runtime.load(artifact) as plain, runtime.load(artifact, label_map="carla") as raw, \
            runtime.load(artifact, label_map="carla-palette") as palette:
        for i, scene in enumerate(scenes):
            expected = plain(scene)
            frame = bgra(tags_of(scene), seed=i)
            assert np.array_equal(raw(carla_tags(frame.tobytes(), scene.shape[1], scene.shape[0])), expected)
            assert np.array_equal(raw(frame[..., [2, 1, 0, 3]]), expected)  # an RGBA array: red is channel 0
            assert np.array_equal(palette(palette_of(tags_of(scene))), expected)
            values, id_to_labels = replicator_frame(scene, seed=i, colorize=i == 1)
            assert np.array_equal(plain(values, frame_labels=id_to_labels), expected)
        source = CarlaSource(raw.label_set, "carla", frames=[bgra(tags_of(s), seed=i) for i, s in enumerate(scenes)])
        streamed = []
        run_stream(raw, source, CallbackSink(streamed.append))
        assert all(np.array_equal(a, plain(s)) for a, s in zip(streamed, scenes, strict=True))
        side_by_side = []  # a simulator's own arrays: the loop reads them through the synthesizer's mapping
        run_stream(raw, IterableSource([tags_of(s) for s in scenes]), CallbackSink(side_by_side.append),
                   StreamOptions(side_by_side=True))
        assert all(np.array_equal(a, np.concatenate([CITYSCAPES.ids_to_colors(s), plain(s)], axis=1))
                   for a, s in zip(side_by_side, scenes, strict=True))
        for synth in (plain, raw, palette):
            assert synth.unknown_colors.unknown == 0 and not synth.unknown_colors.unmapped


def test_a_stream_waiting_for_carla_frames_ends_when_a_later_stage_fails(tiny_artifacts):
    """The sensor callback may never push again (the simulator paused): a failed sink must still end the stream."""
    def failing_sink(picture):
        raise OSError("disk full")

    with runtime.load(tiny_artifacts["fp32"].artifact_path, label_map="carla") as synth:
        source = CarlaSource(synth.label_set, "carla")
        source.push(bgra(tags_of(street_layout(*TINY_RES, seed=1))))  # one frame, then the simulator pauses
        ended = []

        def stream():
            with pytest.raises(CrnError, match="disk full"):
                run_stream(synth, source, CallbackSink(failing_sink))
            ended.append(True)

        runner = threading.Thread(target=stream, daemon=True)
        runner.start()
        runner.join(60)
        assert ended, "the stream still waits for a frame after its sink failed"


@pytest.fixture(scope="module")
def label_id_artifact(tmp_path_factory):
    """spade-tiny: a Cityscapes label-id model (35 classes), FP32 ONNX at 32x64."""
    from crn_deploy.cli.export import main as export_main

    out = tmp_path_factory.mktemp("label-ids")
    assert export_main(["--preset", "spade-tiny", "--random-weights", "--res", "32x64", "--precision", "fp32",
                        "--out", str(out), "--samples", "1", "--no-engine"]) == 0
    return out / "spade-tiny-seed0-32x64-fp32.onnx"


def test_the_carla_mapping_names_a_label_id_models_own_classes(label_id_artifact):
    """The same mapping on a label-id model: guard rail, bridge, static... are its classes, so they stay apart."""
    tags = np.resize(np.arange(29, dtype=np.uint8), (32, 64))
    expected = np.array([_class_id(CITYSCAPES_LABEL_IDS, _expected_0_9_14(int(t))[1]) for t in tags.ravel()],
                        np.uint8).reshape(tags.shape)
    instances = np.zeros(tags.shape, np.int32)
    with runtime.load(label_id_artifact) as plain, runtime.load(label_id_artifact, label_map="carla") as raw:
        assert np.array_equal(raw(carla_tags(bgra(tags)), instances=instances), plain(expected, instances=instances))
        assert np.array_equal(raw.label_ids(carla_tags(bgra(tags))), expected)


def test_crn_bench_reads_its_labels_through_a_mapping(tiny_artifacts, tmp_path, capsys):
    from crn_deploy.cli.bench import main as bench_main

    (tmp_path / "raw").mkdir()
    assert cv2.imwrite(str(tmp_path / "raw" / "a.png"), bgra(tags_of(street_layout(*TINY_RES, seed=1))))
    folder = tiny_artifacts["fp32"].artifact_path.parent
    common = [str(folder), "--labels", str(tmp_path / "raw"), "--backend", "onnxruntime", "--device", "cpu",
              "--warmup", "0", "--iterations", "1", "--duration", "0", "--json", str(tmp_path / "r.json")]
    assert bench_main([*common, "--label-map", "carla"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert "read through the 'carla' label mapping" in report["settings"]["inputs"] and not report["warnings"]
    assert bench_main([*common]) == 0  # the same BGRA frames as colours: nonsense, and said so
    assert any("outside the 'cityscapes' palette" in w for w in json.loads((tmp_path / "r.json").read_text())
               ["warnings"])
    with pytest.raises(SystemExit) as stopped:
        bench_main([str(folder), "--label-map", "carla"])
    assert stopped.value.code == 2 and "--label-map reads the label images of --labels" in capsys.readouterr().err


# the CARLA example -----------------------------------------------------------------------------------------------
def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("carla_loop", ROOT / "examples" / "carla_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeImage:
    """What CARLA's sensor callback receives (carla.Image): BGRA bytes with the tag in red, and its size."""

    def __init__(self, tags: np.ndarray, frame: int) -> None:
        self.raw_data = memoryview(bgra(tags, seed=frame).tobytes())
        self.height, self.width = tags.shape
        self.frame = frame


class FakeCamera:
    """Stands in for CARLA's semantic camera: ``listen`` starts the simulator's own thread, which ticks as fast as
    it can and calls the callback with each frame, never waiting for anything else."""

    def __init__(self, scenes: list[np.ndarray]) -> None:
        import threading

        self.scenes, self.listening = scenes, threading.Event()
        self.thread = None

    def listen(self, callback) -> None:
        import threading

        def ticks():
            for frame, scene in enumerate(self.scenes):
                callback(FakeImage(tags_of(scene), frame))

        self.thread = threading.Thread(target=ticks, daemon=True)
        self.thread.start()
        self.listening.set()

    def stop(self) -> None:
        self.listening.clear()


def test_the_carla_example_paints_frames_as_they_come_and_never_holds_the_simulator_up(tiny_artifacts):
    import threading

    example = _example()
    scenes = [street_layout(*TINY_RES, seed=s) for s in range(40)]
    released = threading.Event()
    written = []

    def stalled_display(rgb):  # the output is stalled until every frame has been sent
        released.wait(60)
        written.append(rgb)

    with runtime.load(tiny_artifacts["fp32"].artifact_path, label_map="carla") as synth:
        loop = example.PaintLoop(synth, CallbackSink(stalled_display), frames=len(scenes))
        camera = FakeCamera(scenes)
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("stats", loop.run(camera)), daemon=True)
        runner.start()
        camera.listening.wait(30)
        camera.thread.join(60)
        sent_while_stalled = not camera.thread.is_alive()  # every callback returned while nothing could be painted
        released.set()
        runner.join(120)
        assert sent_while_stalled and "stats" in outcome
        stats = outcome["stats"]
        assert loop.source.pushed == len(scenes) and loop.source.dropped > 0
        assert stats.frames_out + loop.source.dropped == len(scenes) == stats.frames_in + loop.source.dropped
        expected = [np.concatenate([CITYSCAPES.ids_to_colors(s), synth(s, mapped=True)],
                                   axis=1) for s in scenes]
    painted = [next(i for i, e in enumerate(expected) if np.array_equal(w, e)) for w in written]
    assert painted == sorted(painted) and len(set(painted)) == len(written)  # each a frame sent, in order


def test_the_carla_example_refuses_in_one_line_without_the_client_or_a_server(tmp_path):
    example = ROOT / "examples" / "carla_loop.py"
    bare = subprocess.run([sys.executable, str(example), "x.onnx"], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 1 and bare.stderr.strip().splitlines() == [
        "carla_loop: needs CARLA's Python client: pip install carla==0.9.16 (the server's version)"]
    (tmp_path / "carla.py").write_text(
        "class Client:\n"
        "    def __init__(self, host, port):\n        pass\n"
        "    def set_timeout(self, seconds):\n        pass\n"
        "    def get_world(self):\n"
        "        raise RuntimeError('time-out of 5000ms while waiting for the simulator')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    down = subprocess.run([sys.executable, str(example), "x.onnx", "--port", "2999"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "no CARLA server answers at 127.0.0.1:2999 (time-out of 5000ms" in down.stderr


# Serve's replica (the Ray-free body of one; tests/test_serve.py runs the real endpoint) ----------------------------
def test_a_serve_replica_reads_png_and_raw_bodies_through_its_label_mapping(tiny_artifacts):
    from crn_deploy.scale.serve import Replica

    artifact = str(tiny_artifacts["fp32"].artifact_path)
    scene = street_layout(*TINY_RES, seed=8)
    tags = tags_of(scene)
    raw = Replica(artifact, "cpu", 1, label_map="carla")
    png = cv2.imencode(".png", bgra(tags))[1].tobytes()
    ids = np.ascontiguousarray(tags).tobytes()
    for kind, headers, body in (("image/png", {}, png),
                                ("application/x-crn-labels", {"x-shape": f"{tags.shape[0]},{tags.shape[1]}"}, ids)):
        decoded, _ = raw.decode(kind, headers, body)
        assert np.array_equal(decoded, scene)
    values, id_to_labels = replicator_frame(scene, seed=3, colorize=False)
    frame, _ = raw.decode("image/png", {"x-frame-labels": json.dumps(id_to_labels)},
                          cv2.imencode(".png", values)[1].tobytes())
    assert np.array_equal(frame, scene)
    palette = Replica(artifact, "cpu", 1, label_map="carla-palette")
    colours, _ = palette.decode("image/png", {}, cv2.imencode(".png", palette_of(tags)[..., ::-1])[1].tobytes())
    assert np.array_equal(colours, scene)
    expected = raw.synth(scene, mapped=True)
    assert all(np.array_equal(p, expected) for p in raw.paint([(decoded, None), (frame, None), (colours, None)]))
