"""Dataset augmentation on a Ray cluster: every label map of a dataset (a simulator's recorded runs, a
segmentation dataset) through one artifact, in several styles, into a folder of pictures per style.

    ray start --head                                   # and `ray start --address HEAD:6379` on each GPU node
    python examples/augment_on_ray.py engines/x-fp16.onnx 'gtFine/**/*_labelIds.png' out/ --workers 2

Each style is one Ray Data run (an actor pool, each actor opening the artifact once, pictures written
under the label files' names, a rerun skipping what is there). For an artifact with a style input
(SPADE trained with --use_vae) the styles differ by seed; for others they differ by the label maps'
own augmentation: here a horizontal flip, done before synthesis on a Ray Dataset of arrays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import ray.data

from crn_deploy.data.images import write_image
from crn_deploy.data.streams import FolderSource, LabelFrame
from crn_deploy.manifest import Manifest, manifest_for
from crn_deploy.scale.batch import BatchOptions, paint_with_pool, synthesize_files
from crn_deploy.scale.cluster import connect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("labels", help="folder or glob of label images")
    p.add_argument("out", type=Path)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=None)
    p.add_argument("--ray", default=None, help="cluster address (default: a local Ray instance)")
    args = p.parse_args()
    options = BatchOptions(workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.ray)

    connect(args.ray)  # once, for both runs

    # 1. the plain pictures, exactly as crn-run would write them
    summary = synthesize_files(args.artifact, args.labels, args.out / "plain", options)
    print(summary.line())

    # 2. flipped label maps, painted from a Ray Dataset of arrays
    manifest = Manifest.read(manifest_for(args.artifact))
    rows = []
    for name, labels in FolderSource(args.labels, manifest.label_set):
        ids, instances = labels if isinstance(labels, LabelFrame) else (labels, None)
        row = {"name": name, "labels": np.ascontiguousarray(ids[:, ::-1])}
        if any(spec.name == "instances" for spec in manifest.input_specs):
            row["instances"] = np.ascontiguousarray((instances if instances is not None
                                                     else ids.astype(np.int32))[:, ::-1])
        rows.append(row)
    painted = paint_with_pool(ray.data.from_items(rows), args.artifact, options)
    for row in painted.iter_rows():
        write_image(args.out / "flipped" / f"{row['name']}.png", row["image"])
    print(f"{len(rows)} flipped label maps painted into {args.out / 'flipped'}")


if __name__ == "__main__":
    main()
