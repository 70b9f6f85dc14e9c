"""Simulators' label spaces as data: CARLA's semantic tags with the colours its CityScapesPalette converter paints
them (since 0.9.14, and up to 0.9.13), and the class names Omniverse Replicator reserves. Each CARLA row also says
what the tag becomes in a model's label set, by class name: the first of the names that the set has (``"void"``
always resolves). ``label_mapping`` makes the built-in mappings from these rows; docs/streaming.md explains the
choices.
"""

from __future__ import annotations

# What a row's tag becomes where no class of the label set is its equal: the set's own "nothing" class where it
# has one (Cityscapes' label ids: the models saw id 0 on every unlabelled pixel), else void.
NOTHING = ("unlabeled", "void")

# CARLA 0.9.14 and later. Tags and names: LibCarla/source/carla/rpc/ObjectLabel.h (CityObjectLabel); colours: the
# semantic segmentation camera's table in Docs/ref_sensors.md ("tags changed from version 0.9.13 to 0.9.14"),
# carla-simulator/carla. Tags 1-19 are the 19 Cityscapes training classes in train-id order (tag = train id + 1),
# painted in Cityscapes' colours; 20-28 are CARLA's own.
# (tag, CARLA's name, CityScapesPalette colour, the classes it becomes: the first the label set has)
CARLA_TAGS = (
    (0, "Unlabeled", (0, 0, 0), NOTHING),
    (1, "Roads", (128, 64, 128), ("road",)),
    (2, "SideWalks", (244, 35, 232), ("sidewalk",)),
    (3, "Building", (70, 70, 70), ("building",)),
    (4, "Wall", (102, 102, 156), ("wall",)),
    (5, "Fence", (190, 153, 153), ("fence",)),
    (6, "Pole", (153, 153, 153), ("pole",)),
    (7, "TrafficLight", (250, 170, 30), ("traffic light",)),
    (8, "TrafficSign", (220, 220, 0), ("traffic sign",)),
    (9, "Vegetation", (107, 142, 35), ("vegetation",)),
    (10, "Terrain", (152, 251, 152), ("terrain",)),
    (11, "Sky", (70, 130, 180), ("sky",)),
    (12, "Pedestrian", (220, 20, 60), ("person",)),
    (13, "Rider", (255, 0, 0), ("rider",)),
    (14, "Car", (0, 0, 142), ("car",)),
    (15, "Truck", (0, 0, 70), ("truck",)),
    (16, "Bus", (0, 60, 100), ("bus",)),
    (17, "Train", (0, 80, 100), ("train",)),
    (18, "Motorcycle", (0, 0, 230), ("motorcycle",)),
    (19, "Bicycle", (119, 11, 32), ("bicycle",)),
    (20, "Static", (110, 190, 160), ("static", "void")),  # Cityscapes' static and dynamic are void in training
    (21, "Dynamic", (170, 120, 50), ("dynamic", "void")),
    (22, "Other", (55, 90, 80), NOTHING),  # no Cityscapes class is "everything else"
    (23, "Water", (45, 60, 150), NOTHING),  # Cityscapes has no water
    (24, "RoadLine", (157, 234, 50), ("road",)),  # Cityscapes labels the markings on a road as road
    (25, "Ground", (81, 0, 81), ("ground", "terrain")),
    (26, "Bridge", (150, 100, 100), ("bridge", "building")),  # both Cityscapes "construction"
    (27, "RailTrack", (230, 150, 140), ("rail track", "void")),  # no drivable or grass class fits a track
    (28, "GuardRail", (180, 165, 180), ("guard rail", "fence")),
)

# CARLA 0.9.10 to 0.9.13 (the tags 13-22 came with carla-simulator/carla#3251): tags, names and colours from
# LibCarla/source/carla/image/CityScapesPalette.h at 0.9.13 and the table of Docs/ref_sensors.md before 0.9.14,
# carla-simulator/carla. The same choices as above, tag by tag.
CARLA_0_9_13_TAGS = (
    (0, "Unlabeled", (0, 0, 0), NOTHING),
    (1, "Building", (70, 70, 70), ("building",)),
    (2, "Fence", (100, 40, 40), ("fence",)),
    (3, "Other", (55, 90, 80), NOTHING),
    (4, "Pedestrian", (220, 20, 60), ("person",)),
    (5, "Pole", (153, 153, 153), ("pole",)),
    (6, "RoadLine", (157, 234, 50), ("road",)),
    (7, "Road", (128, 64, 128), ("road",)),
    (8, "SideWalk", (244, 35, 232), ("sidewalk",)),
    (9, "Vegetation", (107, 142, 35), ("vegetation",)),
    (10, "Vehicles", (0, 0, 142), ("car",)),  # one tag for every vehicle until 0.9.14
    (11, "Wall", (102, 102, 156), ("wall",)),
    (12, "TrafficSign", (220, 220, 0), ("traffic sign",)),
    (13, "Sky", (70, 130, 180), ("sky",)),
    (14, "Ground", (81, 0, 81), ("ground", "terrain")),
    (15, "Bridge", (150, 100, 100), ("bridge", "building")),
    (16, "RailTrack", (230, 150, 140), ("rail track", "void")),
    (17, "GuardRail", (180, 165, 180), ("guard rail", "fence")),
    (18, "TrafficLight", (250, 170, 30), ("traffic light",)),
    (19, "Static", (110, 190, 160), ("static", "void")),
    (20, "Dynamic", (170, 120, 50), ("dynamic", "void")),
    (21, "Water", (45, 60, 150), NOTHING),
    (22, "Terrain", (145, 170, 100), ("terrain",)),
)

# Omniverse Replicator's semantic segmentation (omni.replicator.core's BasicWriter: semantic_segmentation_<N>.png
# with semantic_segmentation_labels_<N>.json, its idToLabels) names two ids in every frame itself: BACKGROUND
# (nothing was hit) and UNLABELLED (geometry without a class label).
REPLICATOR_RESERVED = {"background": NOTHING, "unlabelled": NOTHING}
