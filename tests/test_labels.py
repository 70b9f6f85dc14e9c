import numpy as np
import pytest

from crn_deploy.errors import UsageError
from crn_deploy.labels import CITYSCAPES, VOID_ID, LabelSet, cityscapes_label_ids_to_train_ids


def test_cityscapes_palette_has_19_classes_in_train_id_order():
    assert CITYSCAPES.num_classes == 19
    assert CITYSCAPES.colors[0] == (128, 64, 128) and CITYSCAPES.names[0] == "road"
    assert CITYSCAPES.colors[13] == (0, 0, 142) and CITYSCAPES.names[13] == "car"
    assert CITYSCAPES.colors[18] == (119, 11, 32) and CITYSCAPES.names[18] == "bicycle"


def test_colors_map_to_ids_exactly_and_unknown_colors_are_void():
    ids = np.arange(19, dtype=np.uint8).reshape(1, 19)
    rgb = CITYSCAPES.ids_to_colors(ids)
    assert np.array_equal(CITYSCAPES.colors_to_ids(rgb), ids)
    off_by_one = rgb.copy()
    off_by_one[0, 0, 0] += 1  # (129, 64, 128): not road
    back = CITYSCAPES.colors_to_ids(off_by_one)
    assert back[0, 0] == VOID_ID and np.array_equal(back[0, 1:], ids[0, 1:])


def test_strict_mode_names_the_unknown_colours():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(UsageError, match=r"1 pixels .*\(1, 2, 3\)"):
        CITYSCAPES.colors_to_ids(rgb, strict=True)
    assert CITYSCAPES.colors_to_ids(np.zeros((2, 2, 3), np.uint8), strict=True).max() == VOID_ID  # void colour ok


def test_colour_maps_must_be_uint8_rgb():
    with pytest.raises(UsageError, match="uint8"):
        CITYSCAPES.colors_to_ids(np.zeros((4, 4, 3), np.float32))


def test_void_ids_render_in_the_void_colour():
    assert tuple(CITYSCAPES.ids_to_colors(np.array([255, 19, 200], np.uint8))[1]) == CITYSCAPES.void_color


def test_cityscapes_label_ids_map_to_train_ids():
    label_ids = np.array([7, 8, 26, 33, 0, 6, 255], np.uint8)
    assert list(cityscapes_label_ids_to_train_ids(label_ids)) == [0, 1, 13, 18, 255, 255, 255]


def test_label_set_round_trips_and_rejects_duplicates():
    assert LabelSet.from_dict(CITYSCAPES.to_dict()) == CITYSCAPES
    with pytest.raises(UsageError, match="one colour for two classes"):
        LabelSet("bad", ("a", "b"), ((1, 1, 1), (1, 1, 1)))


def test_a_label_sets_raw_id_files_are_data_that_every_decoder_path_follows(tmp_path):
    """A set's own raw-id table, found by the file's name, maps ids for files, bytes and folders alike; the same
    ids under another name are the set's own."""
    import cv2

    from crn_deploy.data.label_maps import decode_label_map, find_label_files, read_label_image
    from crn_deploy.labels import RawIds

    table = np.full(256, VOID_ID, np.uint8)
    table[[10, 20]] = [1, 0]
    sim = LabelSet("sim", ("road", "car"), ((1, 1, 1), (2, 2, 2)), raw_ids=(RawIds("*_sim.png", table),))
    ids = np.array([[10, 20, 7]], np.uint8)
    cv2.imwrite(str(tmp_path / "a_sim.png"), ids)
    cv2.imwrite(str(tmp_path / "b.png"), np.array([[1, 0, 255]], np.uint8))
    assert read_label_image(tmp_path / "a_sim.png", sim).tolist() == [[1, 0, 255]]
    assert decode_label_map((tmp_path / "a_sim.png").read_bytes(), sim, name="a_sim.png").tolist() == [[1, 0, 255]]
    files = find_label_files(tmp_path)
    assert [files.read(n, sim).tolist() for n in files.names] == [[[1, 0, 255]], [[1, 0, 255]]]
    assert LabelSet.from_dict(CITYSCAPES.to_dict()).raw_table("x_gtFine_labelIds.png") is not None  # manifests
