"""Batch synthesis on a Ray cluster with Ray Data: label maps in, pictures out, an actor pool in which
each actor opens the artifact once (``runtime.load``) and holds a GPU (or CPU threads where there is
none). Ray Data streams the inputs with backpressure; its actors are restarted and their tasks
retried when a worker dies (Ray Data's defaults for actor pools: ``max_restarts=-1``,
``max_task_retries=-1``).

Exactly once: every picture is written under a temporary name and renamed, to the name single-process
``crn-run`` gives it (the label file's path below the folder or glob root), from the same synthesizer
call; a retried task rewrites the same bytes, and no reader ever sees half a file. A rerun skips the
pictures already there unless ``overwrite``. The run's record (``crn-run-record.json``) lists what was
written and where from.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import encode_picture, write_image
from ..data.label_maps import decode_instance_map, decode_label_map, read_instance_image, read_label_image
from ..data.streams import FolderSource
from ..errors import UsageError
from ..files import ensure_writable_dir, write_json_atomic
from ..manifest import Manifest, manifest_for

RECORD_NAME = "crn-run-record.json"


@dataclass
class BatchOptions:
    workers: int = 1
    gpus_per_worker: float | None = None  # 0: CPU workers (ONNX Runtime threads); None: 1 where the cluster has GPUs
    address: str | None = None  # None: a local Ray instance; "auto" or host:port: an existing cluster
    overwrite: bool = False
    threads: int | None = None  # ONNX Runtime intra-op threads per CPU worker (None: its own choice)
    batch_size: int = 4  # label maps per Ray Data batch handed to an actor
    strict_colors: bool = False


@dataclass
class BatchSummary:
    inputs: int
    written: int
    skipped: int
    seconds: float
    workers: int
    record: Path
    pids: set = field(default_factory=set)  # the worker processes that wrote pictures

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.inputs} label maps: {self.written} pictures written, {self.skipped} already there "
                f"(skipped); {rate:.2f} pictures/s on {self.workers} Ray worker(s) "
                f"({len(self.pids)} worker process(es) wrote)")


class Painter:
    """A Ray Data actor: opens the artifact once, then paints batches of rows. A row names its label map
    (``name``) and holds it as a label file (``path``), a map in a NumPy shard (``shard``, ``index``) or
    PNG bytes (``labels_png``, with ``instances_png`` where there are instance maps, as Parquet rows do).
    With an output folder each picture is written there and the row comes back as a record; without one
    the picture comes back as PNG bytes (``image_png``). Rows of arrays (``labels``, optional
    ``instances``; no ``name``) come back with an ``image`` column."""

    def __init__(self, artifact: str, output: str | None = None, device: str = "auto",
                 threads: int | None = None, strict_colors: bool = False) -> None:
        from .. import runtime

        self.synth = runtime.load(artifact, device=device, threads=threads)
        self.output = Path(output) if output else None
        self.strict_colors = strict_colors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "labels" in batch:
            instances = batch.get("instances")
            images = [self.synth(labels, instances=None if instances is None else instances[i])
                      for i, labels in enumerate(batch["labels"])]
            return {**batch, "image": np.stack(images)}
        out: dict[str, list] = {"name": [], "input": [], "output" if self.output else "image_png": [], "pid": []}
        for i, name in enumerate(batch["name"]):
            ids, instances, where = self._read(batch, i)
            picture = self.synth(ids, instances=instances)
            if self.output:
                target = picture_path(self.output, str(name))
                write_image(target, picture)
                out["output"].append(str(target))
            else:
                out["image_png"].append(encode_picture(picture))
            out["name"].append(str(name))
            out["input"].append(where)
            out["pid"].append(os.getpid())
        return {k: np.array(v, dtype=object if k == "image_png" else None) for k, v in out.items()}

    def _read(self, batch: dict, i: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        label_set = self.synth.label_set
        if "path" in batch:
            path = Path(batch["path"][i])
            labels = read_label_image(path, label_set, strict_colors=self.strict_colors,
                                      unknown=self.synth.unknown_colors)
            return labels, read_instance_image(path), str(path)
        if "shard" in batch:
            shard, index = str(batch["shard"][i]), int(batch["index"][i])
            labels, instances = open_shard(shard)
            return np.asarray(labels[index]), None if instances is None else np.asarray(instances[index]), \
                f"{shard}[{index}]"
        where = f"row {batch['name'][i]}"
        ids = decode_label_map(bytes(batch["labels_png"][i]), label_set, name=where, strict_colors=self.strict_colors,
                               unknown=self.synth.unknown_colors, png_only=True)
        extra = batch.get("instances_png")
        instances = None if extra is None or extra[i] is None else decode_instance_map(bytes(extra[i]), where)
        return ids, instances, where


def open_shard(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A NumPy shard of label maps: ``.npy`` uint8 [N,H,W] ids (memory-mapped), or ``.npz`` with ``labels``
    [N,H,W] and, optionally, ``instances`` [N,H,W]."""
    if path.endswith(".npz"):
        data = np.load(path)
        if "labels" not in data:
            raise UsageError(f"{path} has no 'labels' array (found {', '.join(data.files)})")
        return data["labels"], data["instances"] if "instances" in data else None
    return np.load(path, mmap_mode="r"), None


def picture_path(folder: Path, name: str) -> Path:
    """Where single-process crn-run's folder sink writes the picture of the label file ``name``."""
    return Path(folder) / f"{name}.png"


SHARD_SUFFIXES = (".npy", ".npz")


def synthesize_files(artifact: Path, pattern: str, output: Path, options: BatchOptions,
                     log: Callable[[str], None] = print) -> BatchSummary:
    """Label maps -> pictures on a Ray cluster. Inputs: a folder or glob of label images (Cityscapes
    ``*_labelIds.png`` with the ``*_instanceIds.png`` beside, where the artifact takes instance maps),
    a glob of NumPy shards (``.npy`` [N,H,W] ids, ``.npz`` with ``labels`` and optional ``instances``;
    map i of ``run7.npy`` is named ``run7/000007``), or Parquet (a file or folder ending ``.parquet``
    with columns ``name``, ``labels_png``, optional ``instances_png``). Output: a folder of
    ``<name>.png`` (a rerun skips what is there unless ``overwrite``), or Parquet (``name``,
    ``image_png``) when ``output`` ends with ``.parquet``."""
    manifest = Manifest.read(manifest_for(Path(artifact)))
    to_parquet = Path(output).suffix == ".parquet"
    if to_parquet and Path(output).exists() and not options.overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it, or another --output")
    ray = connect(options.address, log)
    rows, names = _inputs(ray, pattern, manifest)
    done = set() if to_parquet or options.overwrite else {n for n in names if picture_path(output, n).is_file()}
    if isinstance(rows, list):  # skipped on the driver: a filter task would wait for CPUs the actors hold
        dataset = ray.data.from_items([r for r in rows if r["name"] not in done])
    else:
        dataset = rows.filter(lambda row: str(row["name"]) not in done, num_cpus=0) if done else rows
    if not to_parquet:
        ensure_writable_dir(output)
    started = time.perf_counter()
    records = _run(ray, artifact, dataset, None if to_parquet else output, options,
                   output if to_parquet else None) if len(names) > len(done) else []
    seconds = time.perf_counter() - started
    record = Path(f"{output}.record.json") if to_parquet else Path(output) / RECORD_NAME
    write_json_atomic(record, {"artifact": str(Path(artifact).resolve()), "input": str(pattern),
                               "written": sorted(({"name": r["name"], "input": r["input"],
                                                   "output": r.get("output", str(output))} for r in records),
                                                 key=lambda r: r["name"]),
                               "skipped": len(done), "seconds": round(seconds, 3), "workers": options.workers})
    return BatchSummary(len(names), len(records), len(done), seconds, options.workers, record,
                        {int(r["pid"]) for r in records})


def _inputs(ray, pattern: str, manifest: Manifest):
    """(rows naming their label maps: a list, or a Ray Dataset for Parquet; the names in order)."""
    if str(pattern).rstrip("/").endswith(".parquet"):
        dataset = ray.data.read_parquet(str(pattern))
        names = [str(r["name"]) for r in dataset.select_columns(["name"]).take_all()]
        return dataset, names
    shards = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).suffix in SHARD_SUFFIXES)
    if shards:
        rows = [{"shard": str(s), "index": i, "name": f"{s.stem}/{i:06d}"}
                for s in shards for i in range(len(open_shard(str(s))[0]))]
    else:
        source = FolderSource(pattern, manifest.label_set)
        rows = [{"path": str(p), "name": n} for p, n in zip(source.files, source.names, strict=True)]
    return rows, [r["name"] for r in rows]


def _run(ray, artifact: Path, dataset, output: Path | None, options: BatchOptions, parquet: Path | None) -> list[dict]:
    if options.gpus_per_worker is None:
        options.gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU") else 0.0
    painted = paint_with_pool(dataset, artifact, options, output=output)
    if parquet is not None:
        painted = painted.materialize()
        painted.select_columns(["name", "image_png"]).write_parquet(str(parquet))
        return [{"name": r["name"], "input": r["input"], "pid": r["pid"]}
                for r in painted.select_columns(["name", "input", "pid"]).take_all()]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in painted.take_all()]


def paint_with_pool(dataset, artifact: Path, options: BatchOptions, output: Path | None = None):
    """``dataset`` (rows of ``labels`` [H,W] uint8 (+ ``instances``), or of label files ``path``/``name``
    with ``output``) mapped through an actor pool of ``options.workers`` painters: a lazy Ray Dataset."""
    device = "auto" if options.gpus_per_worker else "cpu"
    if Path(artifact).suffix == ".engine" and not options.gpus_per_worker:
        raise UsageError(f"{artifact} is a TensorRT engine: give each worker a GPU (--gpus-per-worker 1)")
    return dataset.map_batches(
        Painter, batch_size=options.batch_size, concurrency=options.workers, num_gpus=options.gpus_per_worker,
        num_cpus=0 if options.gpus_per_worker else 1, batch_format="numpy",
        fn_constructor_kwargs={"artifact": str(Path(artifact).resolve()), "output": str(output) if output else None,
                               "device": device, "threads": options.threads, "strict_colors": options.strict_colors})


def connect(address: str | None, log=print):
    """Ray, initialised: a local instance (``address`` None) or an existing cluster ("auto", host:port)."""
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'crn-deploy[ray]'") from None
    if not ray.is_initialized():
        # ray.init sets a SIGTERM handler that exits at once (code 15): keep the caller's, which shuts down
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main_thread else None
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        resources = ray.cluster_resources()
        log(f"Ray {ray.__version__}: {'local instance' if address is None else address}, "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return ray


def read_record(output: Path) -> dict:
    return json.loads((Path(output) / RECORD_NAME).read_text())
