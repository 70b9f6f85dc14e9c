"""Batch synthesis on a Ray cluster with Ray Data: label maps in, pictures out, in three overlapping stages as
Ray Data's batch-inference pattern has them: reading and decoding label maps (CPU tasks), synthesis in an actor
pool in which each actor opens the artifact once (``runtime.load``) and holds a GPU or its CPU share, and
encoding and writing pictures (CPU tasks). Ray Data streams between them with backpressure; its actors are
restarted and their tasks retried when a worker dies (``max_restarts=-1``, ``max_task_retries=-1``).

Inputs and outputs are local folders (shared by every node of a cluster: checked at start) or object-store
prefixes (``s3://``, ``gs://``...; see ``data.storage``). Exactly once: every picture is written whole (a
temporary renamed, or one object upload) under the name single-process ``crn-run`` gives it, from the same
synthesizer call; a retried task rewrites the same bytes. A rerun skips the pictures already there unless
``overwrite``. The run record (``crn-run-record.json``) lists every picture written into that output by any
run, with the run that wrote it; it is rewritten as pictures arrive, so an interrupted run leaves a valid one.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.images import encode_picture
from ..data.label_mapping import LabelMapping, resolve_label_map
from ..data.label_maps import decode_instance_map, decode_label_map, find_label_files, frame_labels_name, label_ids
from ..data.storage import Store, is_uri, matching, split_pattern
from ..errors import UnreadableInput, UsageError
from ..labels import UnknownColors
from ..manifest import Manifest, manifest_for
from ..targets import target_of_engine_file
from .cluster import connected

RECORD_NAME = "crn-run-record.json"


@dataclass
class BatchOptions:
    workers: int = 1
    gpus_per_worker: float | None = None  # 0: CPU workers; None: 1 where the cluster has GPUs
    address: str | None = None  # None: a local Ray instance; "auto" or host:port: an existing cluster
    overwrite: bool = False
    threads: int | None = None  # ONNX Runtime intra-op threads per map a CPU worker paints (None: see cpu_painting)
    cpus_per_worker: float | None = None  # CPUs each CPU actor reserves (None: an even share, see worker_cpus)
    batch_size: int = 64  # label maps per Ray Data batch: larger ones amortise each task's and call's fixed cost
    strict_colors: bool = False
    label_map: LabelMapping | str | None = None  # the label mapping the reading stage reads the maps through


@dataclass
class BatchSummary:
    inputs: int
    written: int
    skipped: int
    seconds: float
    workers: int
    record: str  # where the run record is (a path or URI)
    pids: set = field(default_factory=set)  # the worker processes that wrote pictures
    unreadable: list = field(default_factory=list)  # one line per label file that could not be read (no picture)

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.inputs} label maps: {self.written} pictures written, {self.skipped} already there "
                f"(skipped); {rate:.2f} pictures/s on {self.workers} Ray worker(s) "
                f"({len(self.pids)} worker process(es) wrote)")


class Painter:
    """The synthesis stage: a Ray Data actor that opens the artifact once, then paints batches of rows holding
    ``labels`` arrays [H,W] (and ``instances`` where the row has them); the rows come back with ``image``.
    ``at_once``: maps painted at the same time, from threads sharing the one session (ONNX Runtime runs them
    concurrently, outside the GIL, each on its own thread where ``threads`` is 1; an OpenVINO CPU engine gives
    each its own stream of ``threads`` threads)."""

    def __init__(self, artifact: str, device: str = "auto", threads: int | None = None, at_once: int = 1) -> None:
        from .. import runtime

        concurrent = at_once > 1 and device == "cpu"  # CPU backends take concurrent runs; GPU engines not
        self.synth = runtime.load(artifact, device=device, threads=threads, concurrent=at_once if concurrent else 1)
        self.pool = ThreadPoolExecutor(at_once) if concurrent else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        instances = batch.get("instances")

        def paint(i: int) -> np.ndarray | None:
            labels = _array(batch["labels"][i], np.uint8)
            if labels is None:  # a label file that could not be read
                return None
            return self.synth(labels, instances=None if instances is None else _array(instances[i], np.int32))

        rows = range(len(batch["labels"]))
        images = list(self.pool.map(paint, rows)) if self.pool else [paint(i) for i in rows]
        out = {k: v for k, v in batch.items() if k not in ("labels", "instances")}
        return {**out, "image": _column(images)}


def read_stage(batch: dict[str, np.ndarray], label_set, strict_colors: bool,
               label_map: LabelMapping | None = None) -> dict[str, np.ndarray]:
    """The reading stage (a CPU task): each row's label map decoded to ids [H,W] (through ``label_map`` where
    given), and its instance map where it has one, from a label file (``uri``, ``instances_uri``; a Replicator
    frame's labels at ``frame_labels_uri``), a NumPy shard (``shard``, ``index``) or PNG bytes (``labels_png``,
    ``instances_png``, as Parquet rows hold them); unknown colours counted per row."""
    labels, instances, unknown, unreadable = [], [], [], []
    mapping = resolve_label_map(label_map, label_set)
    for i, name in enumerate(batch["name"]):
        counter = UnknownColors()
        try:
            ids, inst = _read_row(batch, i, str(name), label_set, strict_colors, counter, mapping)
        except UnreadableInput as e:  # named, skipped, and the run goes on (painted as nothing)
            ids, inst, problem = None, None, str(e)
        else:
            problem = ""
        labels.append(ids)
        instances.append(inst)
        unknown.append(counter.unknown)
        unreadable.append(problem)
    kept = {k: v for k, v in batch.items() if k in ("name", "input")}
    return {**kept, "labels": _column(labels), "instances": _column(instances), "unknown": np.array(unknown),
            "unreadable": np.array(unreadable, dtype=object)}


def _read_row(batch, i: int, name: str, label_set, strict_colors: bool, counter: UnknownColors, mapping):
    if "uri" in batch:
        uri = str(batch["uri"][i])
        frame = str(batch["frame_labels_uri"][i]) if "frame_labels_uri" in batch else ""
        ids = decode_label_map(read_uri(uri), label_set, name=uri, strict_colors=strict_colors, unknown=counter,
                               label_map=mapping, frame_labels=read_uri(frame) if frame else None)
        beside = str(batch["instances_uri"][i]) if "instances_uri" in batch else ""
        return ids, decode_instance_map(read_uri(beside), beside) if beside else None
    if "shard" in batch:
        labels, instances = open_shard(str(batch["shard"][i]))
        index = int(batch["index"][i])
        ids = np.asarray(labels[index])
        if mapping is not None:  # the shard's ids are the source's: read them as files are read
            ids = label_ids(ids, label_set, colors=False, strict=strict_colors, unknown=counter, label_map=mapping)
        return ids, None if instances is None else np.asarray(instances[index])
    ids = decode_label_map(bytes(batch["labels_png"][i]), label_set, name=f"row {name}", strict_colors=strict_colors,
                           unknown=counter, png_only=True, label_map=mapping)
    extra = batch.get("instances_png")
    return ids, None if extra is None or _optional(extra[i]) is None else decode_instance_map(bytes(extra[i]), name)


def read_uri(uri: str) -> bytes:
    """The bytes of a file named by its path or URI."""
    folder, _, name = uri.rpartition("/")
    return Store(folder or ".").read(name)


def write_stage(batch: dict[str, np.ndarray], output: str | None) -> dict[str, np.ndarray]:
    """The writing stage (a CPU task): each picture encoded as PNG and written whole under its name (a record row
    comes back), or, without an output folder, returned as PNG bytes (``image_png``) for Parquet."""
    pngs = [None if _optional(image) is None else encode_picture(image) for image in batch["image"]]
    where = {"name": batch["name"], "input": batch["input"], "host": np.array([socket.gethostname()] * len(pngs)),
             "pid": np.array([os.getpid()] * len(pngs)), "unreadable": batch["unreadable"]}
    if output is None:
        return {**where, "image_png": np.array(pngs, dtype=object)}
    store = Store(output)
    for name, png in zip(batch["name"], pngs, strict=True):
        if png is not None:
            store.write(picture_name(str(name)), png)
    return {**where, "output": np.array([store.uri(picture_name(str(n))) if png is not None else ""
                                         for n, png in zip(batch["name"], pngs, strict=True)])}


def _column(items: list) -> np.ndarray:
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


def _optional(value):
    """None for a missing value (Ray Data fills one with None or NaN)."""
    return None if value is None or (np.ndim(value) == 0 and isinstance(value, (float, np.floating))
                                     and np.isnan(value)) else value


def _array(value, dtype) -> np.ndarray | None:
    """A map as it comes out of a Ray Data column (an array, an object array of rows, or None)."""
    value = _optional(value)
    if value is None:
        return None
    array = np.asarray(value)  # Ray Data may hand int32 tensor columns back as float32 (exact below 2^24)
    return np.array(array.tolist(), dtype=dtype) if array.dtype == object else array.astype(dtype, copy=False)


def open_shard(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A NumPy shard of label maps: ``.npy`` uint8 [N,H,W] ids (memory-mapped), or ``.npz`` with ``labels``
    [N,H,W] and, optionally, ``instances`` [N,H,W]."""
    if path.endswith(".npz"):
        data = np.load(path)
        if "labels" not in data:
            raise UsageError(f"{path} has no 'labels' array (found {', '.join(data.files)})")
        return data["labels"], data["instances"] if "instances" in data else None
    return np.load(path, mmap_mode="r"), None


def picture_name(name: str) -> str:
    """The picture of the label file ``name``, as single-process crn-run's folder sink names it."""
    return f"{name}.png"


def picture_path(folder: Path, name: str) -> Path:
    """Where single-process crn-run's folder sink writes the picture of the label file ``name``."""
    return Path(folder) / picture_name(name)


SHARD_SUFFIXES = (".npy", ".npz")


def synthesize_files(artifact: Path, pattern: str, output: str | Path, options: BatchOptions,
                     log: Callable[[str], None] = print) -> BatchSummary:
    """Label maps -> pictures on a Ray cluster. Inputs: a folder or glob of label images, local or in object
    storage (Cityscapes ``*_labelIds.png`` with the ``*_instanceIds.png`` beside, where the artifact takes
    instance maps), a glob of NumPy shards (``.npy`` [N,H,W] ids, ``.npz`` with ``labels`` and optional
    ``instances``; map i of ``run7.npy`` is named ``run7/000007``), or Parquet (a file or folder ending
    ``.parquet`` with columns ``name``, ``labels_png``, optional ``instances_png``). Output: a folder or prefix
    of ``<name>.png`` (a rerun skips what is there unless ``overwrite``), or Parquet (``name``, ``image_png``)
    when ``output`` ends with ``.parquet``."""
    manifest = Manifest.read(manifest_for(Path(artifact)))
    resolve_label_map(options.label_map, manifest.label_set)  # a mapping the set cannot take stops here, not in a task
    output = str(output)
    to_parquet = output.rstrip("/").endswith(".parquet")
    if to_parquet and not is_uri(output) and Path(output).exists() and not options.overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it, or another --output")
    with connected(options.address, log) as ray:
        return _synthesize(ray, artifact, pattern, output, options, manifest, to_parquet, log)


def _synthesize(ray, artifact: Path, pattern: str, output: str, options: BatchOptions, manifest: Manifest,
                to_parquet: bool, log: Callable[[str], None]) -> BatchSummary:
    rows, names = _inputs(ray, pattern, manifest)
    store = None if to_parquet else Store(output)
    if store is not None:
        store.check_writable()
        check_shared(ray, store, log)
    existing = set(store.files()) if store is not None and not options.overwrite else set()
    done = {n for n in names if picture_name(n) in existing}
    if isinstance(rows, list):  # skipped on the driver: a filter task would wait for CPUs the actors hold
        dataset = ray.data.from_items([r for r in rows if r["name"] not in done])
    else:
        dataset = rows.filter(lambda row: str(row["name"]) not in done, num_cpus=0) if done else rows
    run = RunRecord(output, artifact, pattern, options.workers, store)
    started = time.perf_counter()
    written = 0
    unknown = 0
    unreadable: list[str] = []
    state = "interrupted"
    try:
        if len(names) > len(done):
            # Ray Data's own Parquet readers and writers each take a CPU: leave them one where they run
            ray_io = to_parquet or not isinstance(rows, list)
            painted = _pipeline(ray, artifact, dataset, None if to_parquet else output, options, manifest, ray_io)
            if to_parquet:
                painted = painted.materialize()
                painted.filter(lambda row: not row["unreadable"], num_cpus=0).select_columns(
                    ["name", "image_png"]).write_parquet(output)
                painted = painted.drop_columns(["image_png"])
            for row in painted.iter_rows():
                if row["unreadable"]:
                    unreadable.append(str(row["unreadable"]))
                    log(f"warning: {unreadable[-1]}; skipped, no picture for it")
                    continue
                run.add(row)
                written += 1
                unknown += int(row.get("unknown", 0))
        state = "finished"
    finally:
        run.finish(len(done), time.perf_counter() - started, state, unreadable)
    if unknown:
        log(f"warning: {unknown} pixels of colour label maps had colours outside the {manifest.label_set.name} "
            "palette (void)")
    return BatchSummary(len(names), written, len(done), time.perf_counter() - started, options.workers, run.path,
                        run.pids, unreadable)


class RunRecord:
    """``crn-run-record.json`` beside the pictures (``<output>.record.json`` for Parquet): every picture written
    into this output by any run, with the run that wrote it, and the runs themselves. Rewritten whole (and
    atomically) every few seconds while this run writes, and when it ends, interrupted or not."""

    def __init__(self, output: str, artifact: Path, pattern: str, workers: int, store: Store | None) -> None:
        self.store = store if store is not None else Store(str(output).rstrip("/").rsplit("/", 1)[0] or ".")
        self.name = RECORD_NAME if store is not None else f"{str(output).rstrip('/').rsplit('/', 1)[-1]}.record.json"
        self.path = self.store.uri(self.name)
        self.run_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        self.data = self._previous()
        self.data["runs"].append({"run": self.run_id, "artifact": str(Path(artifact).resolve()), "input": str(pattern),
                                  "workers": workers, "started": datetime.now(timezone.utc).isoformat(),
                                  "state": "running"})
        self.pictures = {p["name"]: p for p in self.data["written"]}
        self.pids: set[int] = set()
        self.saved = 0.0
        self.save()

    def _previous(self) -> dict:
        try:
            data = json.loads(self.store.read(self.name))
            if isinstance(data.get("written"), list) and isinstance(data.get("runs"), list):
                return data
        except (UsageError, ValueError):
            pass
        return {"written": [], "runs": []}

    def add(self, row: dict) -> None:
        name = str(row["name"])
        self.pictures[name] = {"name": name, "input": str(row["input"]), "output": str(row.get("output", "")),
                               "run": self.run_id, "host": str(row.get("host", ""))}
        self.pids.add(int(row["pid"]))
        if time.monotonic() - self.saved > 2.0:
            self.save()

    def finish(self, skipped: int, seconds: float, state: str = "finished", unreadable: list[str] = ()) -> None:
        run = self.data["runs"][-1]
        run.update(state=state, skipped=skipped, seconds=round(seconds, 3),
                   written=sum(1 for p in self.pictures.values() if p["run"] == self.run_id),
                   **({"unreadable": list(unreadable)} if unreadable else {}))
        self.save()

    def save(self) -> None:
        self.data["written"] = sorted(self.pictures.values(), key=lambda p: p["name"])
        self.store.write(self.name, json.dumps(self.data, indent=1).encode())
        self.saved = time.monotonic()


def _inputs(ray, pattern: str, manifest: Manifest):
    """(rows naming their label maps: a list, or a Ray Dataset for Parquet; the names in order)."""
    if str(pattern).rstrip("/").endswith(".parquet"):
        dataset = ray.data.read_parquet(str(pattern))
        names = [str(r["name"]) for r in dataset.select_columns(["name"]).take_all()]
        return dataset.map(lambda row: {**row, "input": f"row {row['name']}"}), names
    store, glob_part = split_pattern(str(pattern))
    files = matching(store.files(recursive="/" in glob_part), glob_part)
    shards = [f for f in files if f.endswith(SHARD_SUFFIXES)]
    if shards and not is_uri(pattern) and not any(frame_labels_name(f) for f in files):  # Replicator: depth .npy
        rows = [{"shard": store._path(s), "index": i, "name": f"{Path(s).stem}/{i:06d}", "input": f"{s}[{i}]"}
                for s in shards for i in range(len(open_shard(store._path(s))[0]))]
        return rows, [r["name"] for r in rows]
    labels = find_label_files(pattern)
    rows = [{"uri": store.uri(f), "name": f.rsplit(".", 1)[0], "input": store.uri(f),
             "instances_uri": store.uri(labels.instances[f]) if f in labels.instances else "",
             "frame_labels_uri": store.uri(labels.frame_labels[f]) if f in labels.frame_labels else ""}
            for f in labels.names]
    return rows, [r["name"] for r in rows]


def _pipeline(ray, artifact: Path, dataset, output: str | None, options: BatchOptions, manifest: Manifest,
              ray_io: bool = False):
    """Read and decode (CPU tasks) -> synthesis (actor pool) -> encode and write (CPU tasks), overlapping."""
    resources = ray.cluster_resources()
    if options.gpus_per_worker is None:  # settled for this run only: the caller's options stay as given
        options = replace(options, gpus_per_worker=1.0 if resources.get("GPU") and not runs_on_cpu(artifact) else 0.0)
    if options.cpus_per_worker is None and not options.gpus_per_worker:
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        free = ray.available_resources().get("CPU", 0.0) - (1.0 if ray_io else 0.0)
        options = replace(options, cpus_per_worker=worker_cpus(nodes, free, options.workers))
    stage = {"num_cpus": _stage_cpus(resources.get("CPU", 0.0), options), "batch_size": options.batch_size,
             "batch_format": "numpy", "compute": ray.data.TaskPoolStrategy(size=max(2, options.workers))}
    label_map = None if options.label_map is None else resolve_label_map(options.label_map, manifest.label_set).mapping
    decoded = dataset.map_batches(read_stage, **stage,
                                  fn_kwargs={"label_set": manifest.label_set, "strict_colors": options.strict_colors,
                                             "label_map": label_map})
    return paint_with_pool(decoded, artifact, options).map_batches(write_stage, **stage, fn_kwargs={"output": output})


def worker_cpus(node_cpus: list[float], available: float, workers: int) -> float:
    """What each CPU painter reserves by default (its threads follow, on ONNX Runtime or OpenVINO): the cluster's
    free CPUs shared evenly among the painters, in whole CPUs, at least one, and no more than lets every painter be
    placed on some node. One painter on one machine so uses the machine as single-process crn-run does;
    the reading and writing tasks share its cores. (Nodes are counted whole: on a cluster busy with other
    work, give cpus_per_worker, --cpus-per-worker.)"""
    workers = max(1, workers)
    share = int(min(sum(node_cpus), available) // workers)
    while share > 1 and sum(int(n // share) for n in node_cpus) < workers:
        share -= 1
    return float(max(1, share))


def _stage_cpus(cluster_cpus: float, options: BatchOptions) -> float:
    """The CPUs each read or write task reserves: half a CPU where the actors leave CPUs free; where CPU actors
    take them all, none (the tasks then share the actors' cores rather than wait for a CPU that never frees; their
    pool is bounded either way)."""
    held = 0.0 if options.gpus_per_worker else options.workers * options.cpus_per_worker
    free = cluster_cpus - held
    return min(0.5, free / 2) if free > 0 else 0.0


def paint_with_pool(dataset, artifact: Path, options: BatchOptions):
    """``dataset`` (rows of ``labels`` [H,W] uint8, optional ``instances``) mapped through an actor pool of
    ``options.workers`` painters, each with a GPU or ``cpus_per_worker`` CPUs (CPU backends' threads default to
    that reservation): a lazy Ray Dataset with an ``image`` column."""
    device = "auto" if options.gpus_per_worker else "cpu"
    engine = target_of_engine_file(Path(artifact).name)
    if engine is not None and engine.device == "cuda" and not options.gpus_per_worker:
        raise UsageError(f"{artifact} is a {engine.runtime} engine: give each worker a GPU (--gpus-per-worker 1)")
    reserved = 1.0 if options.cpus_per_worker is None else options.cpus_per_worker
    if options.gpus_per_worker:
        cpus, threads, at_once = 0, options.threads, 1
    else:
        manifest = Manifest.read(manifest_for(Path(artifact)))
        pixels = max(np.prod(manifest.resolution), np.prod(manifest.output_resolution))  # PosGen paints larger
        cpus, (threads, at_once) = reserved, cpu_painting(int(reserved), int(pixels), options.threads)
    import ray

    return dataset.map_batches(
        Painter, batch_size=options.batch_size, compute=ray.data.ActorPoolStrategy(size=options.workers),
        num_gpus=options.gpus_per_worker, num_cpus=cpus, batch_format="numpy",
        fn_constructor_kwargs={"artifact": str(Path(artifact).resolve()), "device": device, "threads": threads,
                               "at_once": at_once})


SMALL_MAP_PIXELS = 256 * 512


def runs_on_cpu(artifact) -> bool:
    """Whether ``artifact`` is an engine that runs on the CPU only (OpenVINO's): its workers take no GPU."""
    engine = target_of_engine_file(Path(artifact).name)
    return engine is not None and engine.device == "cpu"


def cpu_painting(cpus: int, map_pixels: int, threads: int | None) -> tuple[int, int]:
    """(threads per map, maps painted at once) for a CPU painter holding ``cpus`` CPUs, on ONNX Runtime or an
    OpenVINO engine alike. Maps up to
    256x512 are painted one per CPU at once, one thread each: on small maps that beats one map on every thread
    (benchmarks/README.md, the pipelined Ray path). Larger maps, whose activations take gigabytes at 1024x2048,
    are painted one at a time on every CPU. ``threads`` given: that many per map, as many maps as fit."""
    cpus = max(1, cpus)
    if threads:
        return threads, max(1, cpus // threads)
    return (1, cpus) if map_pixels <= SMALL_MAP_PIXELS else (cpus, 1)


def check_shared(ray, store: Store, log: Callable[[str], None] = print) -> None:
    """A local output folder must be the same folder on every node: a file the driver writes there must be
    visible to a task on each node. Object stores are seen alike everywhere."""
    if store.remote:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    marker = f".crn-shared-check-{uuid.uuid4().hex[:8]}"
    store.write(marker, b"")
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        def sees(path: str) -> bool:
            return Path(path).is_file()

        checks = {n["NodeManagerAddress"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(store._path(marker)) for n in nodes}
        blind = [node for node, ref in checks.items() if not ray.get(ref, timeout=60)]
    finally:
        store.delete(marker)
    if blind:
        raise UsageError(f"{store.location} is not shared by every node of the cluster (not visible on "
                         f"{', '.join(blind)}): use object storage (s3://...) or a filesystem every node mounts")
    log(f"{store.location}: shared by all {len(nodes)} nodes")


def read_record(output: str | Path) -> dict:
    return json.loads(Store(output).read(RECORD_NAME))
