"""CARLA's and Omniverse Replicator's semantic frames, made to their documented formats from a Cityscapes train-id
scene: for the simulator tests and the documented commands that read such frames."""

import json
from pathlib import Path

import cv2
import numpy as np

from crn_deploy.data.simulator_labels import CARLA_TAGS
from crn_deploy.labels import CITYSCAPES, VOID_ID


def bgra(tags: np.ndarray, seed: int = 0) -> np.ndarray:
    """A raw CARLA frame as its sensor sends it: BGRA, the tag in red, other bytes anything (noise here)."""
    frame = np.random.default_rng(seed).integers(0, 256, (*tags.shape, 4), dtype=np.uint8)
    frame[..., 2] = tags
    return frame


def tags_of(train_ids: np.ndarray) -> np.ndarray:
    """The CARLA 0.9.14+ tag frame of a Cityscapes train-id scene: tag = train id + 1, void unlabeled (0)."""
    return np.where(train_ids == VOID_ID, 0, train_ids.astype(np.int32) + 1).astype(np.uint8)


def palette_of(tags: np.ndarray, rows=CARLA_TAGS) -> np.ndarray:
    colours = np.zeros((256, 3), np.uint8)
    for tag, _, colour, _ in rows:
        colours[tag] = colour
    return colours[tags]


def replicator_frame(train_ids: np.ndarray, seed: int, colorize: bool) -> tuple[np.ndarray, dict]:
    """A Replicator semantic frame of the scene (BasicWriter's format): ids of its own (random, per frame) or, with
    ``colorize``, RGBA colours, and its idToLabels: BACKGROUND (0 / transparent black) where the scene is void,
    UNLABELLED (1 / opaque black), the others the class names (in any case)."""
    rng = np.random.default_rng(seed)
    classes = [int(c) for c in np.unique(train_ids) if c != VOID_ID]
    ids = rng.permutation(np.arange(2, 1000))[: len(classes)]
    names = {0: "BACKGROUND", 1: "UNLABELLED",
             **{int(i): CITYSCAPES.names[c].title() for i, c in zip(ids, classes, strict=True)}}
    table = np.zeros(256, np.uint32)
    table[classes] = ids
    values = table[train_ids]
    if not colorize:
        return values.astype(np.uint16), {str(i): {"class": name} for i, name in names.items()}
    colours = {0: (0, 0, 0, 0), 1: (0, 0, 0, 255),
               **{int(i): (*(int(v) for v in rng.integers(1, 256, 3)), 255) for i in ids}}
    palette = np.zeros((1000, 4), np.uint8)
    for i, colour in colours.items():
        palette[i] = colour
    return palette[values], {str(colours[i]): {"class": name} for i, name in names.items()}


def write_png(path: Path, image: np.ndarray) -> None:
    """As the simulators' writers do: colour images in RGB(A) order on disk (OpenCV takes BGR(A))."""
    if image.ndim == 3:
        image = image[..., [2, 1, 0, 3][: image.shape[-1]]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(image))


def replicator_folder(folder: Path, scenes: list[np.ndarray]) -> None:
    """BasicWriter's output folder: rgb_, semantic_segmentation_ and its labels JSON (and depth) per frame;
    frame 0 ids as a 16-bit PNG, frame 1 colourised RGBA, frame 2 ids as NumPy."""
    folder.mkdir(parents=True)
    for i, scene in enumerate(scenes):
        values, id_to_labels = replicator_frame(scene, seed=10 + i, colorize=i == 1)
        if i == 2:
            np.save(folder / f"semantic_segmentation_{i:04d}.npy", values.astype(np.uint32))
        else:
            write_png(folder / f"semantic_segmentation_{i:04d}.png", values)
        (folder / f"semantic_segmentation_labels_{i:04d}.json").write_text(json.dumps(id_to_labels))
        write_png(folder / f"rgb_{i:04d}.png", np.full((*scene.shape, 4), 90, np.uint8))
        np.save(folder / f"distance_to_image_plane_{i:04d}.npy", np.ones(scene.shape, np.float32))
