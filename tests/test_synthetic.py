import numpy as np

from crn_deploy.data.synthetic import CAR, ROAD, SIDEWALK, SKY, street_layout, street_layouts
from crn_deploy.labels import VOID_ID


def test_layouts_are_deterministic_and_differ_by_seed():
    a = street_layout(128, 256, seed=5)
    assert np.array_equal(a, street_layout(128, 256, seed=5))
    assert not np.array_equal(a, street_layout(128, 256, seed=6))


def test_layouts_look_like_a_street():
    ids = street_layout(256, 512, seed=0)
    present = set(np.unique(ids).tolist())
    assert {ROAD, SIDEWALK, SKY, CAR, VOID_ID} <= present
    assert present <= set(range(19)) | {VOID_ID}
    assert ids[0].tolist().count(SKY) > 0 and ids[-1, 256] == VOID_ID  # sky above, ego bonnet below
    assert (ids == ROAD).mean() > 0.1


def test_one_seed_is_the_same_scene_at_every_resolution():
    small = street_layout(64, 128, seed=9)
    large = street_layout(512, 1024, seed=9)
    shrunk = large[4::8, 4::8]
    assert (shrunk == small).mean() > 0.9


def test_time_moves_the_traffic_only():
    a, b = street_layout(128, 256, seed=2, t=0.0), street_layout(128, 256, seed=2, t=1.0)
    assert not np.array_equal(a, b)
    assert (a == b).mean() > 0.9


def test_batches_have_the_engine_layout():
    batch = street_layouts(3, 32, 64, seed=1)
    assert batch.shape == (3, 1, 32, 64) and batch.dtype == np.uint8
