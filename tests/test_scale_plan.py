"""How crn-run --ray shares a cluster's CPUs by default, without starting Ray: each CPU painter reserves an
even share of the free CPUs (whole, at least one, never more than one node has), and the reading and writing
tasks reserve what the painters leave, or share their cores where they leave none; a painter paints small maps
one per CPU at once, large ones one at a time on every CPU; a painter decodes and encodes on threads of its own
where its painting leaves CPUs, with the same result as one by one."""

import pytest

from crn_deploy.scale.batch import BatchOptions, _stage_cpus, cpu_painting, io_threads, worker_cpus


@pytest.mark.parametrize(("nodes", "available", "workers", "expected"), [
    ([2.0], 2.0, 1, 2.0),  # one painter on one machine uses the machine, as single-process crn-run does
    ([2.0], 2.0, 2, 1.0),
    ([16.0], 16.0, 3, 5.0),  # whole CPUs
    ([1.0, 1.0], 2.0, 1, 1.0),  # never more than one node has: it could not be placed
    ([8.0, 8.0], 16.0, 2, 8.0),
    ([4.0], 2.0, 1, 2.0),  # CPUs held by others (Serve replicas) are not counted
    ([2.0], 2.0, 4, 1.0),  # at least one
    ([8.0, 2.0], 10.0, 2, 4.0),  # every painter must fit on some node: not 5 and 5
    ([4.0, 4.0, 4.0], 12.0, 2, 4.0),
])
def test_each_cpu_painter_reserves_an_even_share_of_the_free_cpus(nodes, available, workers, expected):
    assert worker_cpus(nodes, available, workers) == expected


def test_reading_and_writing_tasks_take_what_the_painters_leave():
    assert _stage_cpus(2.0, BatchOptions(workers=1, gpus_per_worker=0, cpus_per_worker=2.0)) == 0.0
    assert _stage_cpus(4.0, BatchOptions(workers=1, gpus_per_worker=0, cpus_per_worker=2.0)) == 0.5
    assert _stage_cpus(2.0, BatchOptions(workers=2, gpus_per_worker=1, cpus_per_worker=1.0)) == 0.5


@pytest.mark.parametrize(("cpus", "pixels", "threads", "expected"), [
    (2, 64 * 128, None, (1, 2)),  # small maps: one per CPU at once, one thread each
    (2, 256 * 512, None, (1, 2)),
    (8, 1024 * 2048, None, (8, 1)),  # large maps: one at a time on every CPU (their activations take GBs)
    (8, 64 * 128, 2, (2, 4)),  # threads given: that many per map, as many maps as fit
    (2, 64 * 128, 4, (4, 1)),
    (0, 64 * 128, None, (1, 1)),
])
def test_a_cpu_painter_paints_small_maps_one_per_cpu_and_large_ones_on_every_cpu(cpus, pixels, threads, expected):
    assert cpu_painting(cpus, pixels, threads) == expected


def test_cpus_per_worker_is_a_ray_option_of_at_least_one_cpu(tmp_path, capsys):
    from crn_deploy.cli.run import main as run_main

    base = [str(tmp_path / "a.onnx"), "--input", str(tmp_path), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        run_main([*base, "--cpus-per-worker", "2"])
    assert exit_info.value.code == 2 and "--cpus-per-worker" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_main([*base, "--ray", "--cpus-per-worker", "0.5"])
    assert exit_info.value.code == 2 and "--cpus-per-worker must be at least 1, got 0.5" in capsys.readouterr().err


@pytest.mark.parametrize(("cpus", "cluster", "expected"), [
    (2.0, {"CPU": 2.0}, 2),  # a CPU painter: its own CPUs, which its painting keeps busy
    (1.0, {"CPU": 16.0}, 1),
    (0, {"CPU": 32.0, "GPU": 4.0}, 8),  # a GPU painter: its GPU's share of the CPUs
    (0, {"CPU": 2.0, "GPU": 4.0}, 2),  # at least two: one batch's decoding beside another's encoding
    (0, {"GPU": 1.0}, 2),
])
def test_a_painter_decodes_and_encodes_on_its_share_of_the_cpus(cpus, cluster, expected):
    assert io_threads(cpus, cluster) == expected


def test_reading_and_writing_on_threads_give_what_one_by_one_gives(tmp_path):
    """The rows come back in their order, each with its own map, count and problem, whichever thread read it."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from crn_deploy.data.synthetic import street_layout
    from crn_deploy.labels import CITYSCAPES
    from crn_deploy.scale.batch import read_stage, write_stage

    uris = []
    for i in range(12):
        colors = CITYSCAPES.ids_to_colors(street_layout(32, 64, seed=i))[..., ::-1]
        if i % 3 == 1:  # JPEG: colours between the palette's, a count of its own
            colors = cv2.imdecode(cv2.imencode(".jpg", colors)[1], cv2.IMREAD_COLOR)
        uris.append(str(tmp_path / f"m{i}.png"))
        cv2.imwrite(uris[-1], colors)
    (tmp_path / "m5.png").write_bytes(b"")  # unreadable
    batch = {"name": np.array([f"m{i}" for i in range(12)]), "input": np.array(uris), "uri": np.array(uris)}
    with ThreadPoolExecutor(4) as pool:
        serial, threaded = read_stage(batch, CITYSCAPES, False), read_stage(batch, CITYSCAPES, False, each=pool.map)
        assert list(serial["unknown"]) == list(threaded["unknown"]) and serial["unknown"].sum() > 0
        assert list(serial["unreadable"]) == list(threaded["unreadable"]) and serial["unreadable"][5]
        assert all((a is None and b is None) or np.array_equal(a, b)
                   for a, b in zip(serial["labels"], threaded["labels"], strict=True))
        painted = {**serial, "image": np.array([None if labels is None else np.dstack([labels] * 3)
                                                for labels in serial["labels"]], dtype=object)}
        one_by_one = write_stage(painted, None, "a" * 64)
        at_once = write_stage(painted, None, "a" * 64, each=pool.map)
    assert list(one_by_one["image_png"]) == list(at_once["image_png"]) and at_once["image_png"][5] is None
    assert len({png for png in at_once["image_png"] if png is not None}) > 1
