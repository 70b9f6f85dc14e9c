"""Batch synthesis on a Ray cluster: label maps in, pictures out. Label files or NumPy shards into a folder or
prefix are painted by ``FolderPainter`` actors, each opening the artifact once (``runtime.load``), holding a GPU
or its CPU share, and reading, painting and writing the batches the driver hands it, two at a time so that one's
reading and writing overlap the other's painting: one process per worker, which starts in about the time Ray
takes to start an actor. Parquet in or out runs on Ray Data in three overlapping stages, as its batch-inference
pattern has them: reading and decoding (CPU tasks), the same painting in an actor pool, encoding and writing (CPU
tasks), streamed with backpressure. Either way a killed worker is restarted and its batches retried
(``max_restarts=-1``, ``max_task_retries=-1``).

Inputs and outputs are local folders (shared by every node of a cluster: checked at start) or object-store
prefixes (``s3://``, ``gs://``...; see ``data.storage``). Exactly once: every picture is written whole and
durably (a temporary synced and renamed, or one object upload) under the name single-process ``crn-run`` gives
it, with the same bytes (the artifact's SHA-256 in a text chunk), from the same synthesizer call; a retried task
rewrites the same bytes. A rerun skips the pictures of the same artifact already there, repaints those cut short,
and refuses another artifact's unless ``overwrite``. The run record (``crn-run-record.json``, see ``record``)
lists every complete picture in the output with the run that wrote it, reconciled with the output at every
run's start and end. On an interrupt the driver closes a gate that every writing task enters before it writes a
batch, and waits for those inside: once it says it stopped, no picture appears after and no temporary is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.images import encode_picture
from ..data.label_mapping import LabelMapping, resolve_label_map
from ..data.label_maps import decode_instance_map, decode_label_map, find_label_files, frame_labels_name, label_ids
from ..data.storage import Store, is_uri, matching, split_pattern
from ..errors import CrnError, UnreadableInput, UsageError
from ..labels import UnknownColors
from ..manifest import Manifest, manifest_for
from ..targets import target_of_engine_file
from ..runtime import artifact_sha256
from .cluster import connected
from .gate import WriteGate
from .record import RECORD_NAME, RunRecord, read_record

__all__ = ["RECORD_NAME", "BatchOptions", "BatchSummary", "paint_with_pool", "read_record", "synthesize_files",
           "uses_ray_data"]
STOP_WAIT_S = 10.0  # how long an interrupted run waits for the tasks publishing pictures
BATCHES_AT_ONCE = 2  # batches a FolderPainter works on at once
BATCHES_QUEUED = 1  # and those waiting at each, so that it never waits for the driver
FIRST_BATCH_PART = 8  # each FolderPainter's first batch is this part of a batch
PLACING_S = 20.0  # how long a run waits for Ray to place its workers before it says so


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
    repainted: int = 0  # pictures found cut short (a crash, a power loss) and painted again

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        again = f" ({self.repainted} of them cut short before and painted again)" if self.repainted else ""
        return (f"{self.inputs} label maps: {self.written} pictures written{again}, {self.skipped} already there "
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


class FolderPainter:
    """Label files or NumPy shards into a folder or prefix: a Ray actor that reads, paints and writes whole batches
    itself, ``BATCHES_AT_ONCE`` at a time (one batch's reading and writing overlap another's painting; a GPU engine
    paints one batch at a time), decoding and encoding on ``io_threads`` threads. One process per worker and no Ray
    Data executor: both cost seconds at the start (benchmarks/README.md, Ray's fixed costs), and nothing large
    crosses Ray's object store."""

    def __init__(self, painter: dict, reading: dict, output: str, artifact_sha256: str, gate,
                 io_threads: int = 1) -> None:
        if gate is not None:  # Ray finds the gate's actor for this process now, not at the first batch's writing
            gate.is_open.remote()
        self.painter = Painter(**painter)
        self.reading, self.output, self.artifact_sha256, self.gate = reading, output, artifact_sha256, gate
        self.one_batch_at_a_time = threading.Lock() if self.painter.pool is None else contextlib.nullcontext()
        self.each = ThreadPoolExecutor(io_threads, thread_name_prefix="crn-io").map if io_threads > 1 else map

    def paint(self, rows: list[dict]) -> dict[str, np.ndarray]:
        """Record rows (``write_stage``'s) for ``rows`` as ``_inputs`` lists them."""
        batch = {key: np.array([row[key] for row in rows]) for key in rows[0]}
        if not _still_open(self.gate):  # stopping: nothing is painted, and a dead worker's retried batch lets its
            return write_stage(_unpainted(batch), self.output, self.artifact_sha256, self.gate)  # entry out at once
        decoded = read_stage(batch, **self.reading, each=self.each)
        with self.one_batch_at_a_time:
            painted = self.painter(decoded)
        return write_stage(painted, self.output, self.artifact_sha256, self.gate, each=self.each)


def _unpainted(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch as the painting stage hands it on, with no picture in it."""
    rows = len(batch["name"])
    return {"name": batch["name"], "input": batch["input"], "image": np.array([None] * rows, dtype=object),
            "unknown": np.zeros(rows, dtype=np.int64), "unreadable": np.array([""] * rows, dtype=object)}


def read_stage(batch: dict[str, np.ndarray], label_set, strict_colors: bool,
               label_map: LabelMapping | None = None, each: Callable = map) -> dict[str, np.ndarray]:
    """The reading stage (a CPU task): each row's label map decoded to ids [H,W] (through ``label_map`` where
    given), and its instance map where it has one, from a label file (``uri``, ``instances_uri``; a Replicator
    frame's labels at ``frame_labels_uri``), a NumPy shard (``shard``, ``index``) or PNG bytes (``labels_png``,
    ``instances_png``, as Parquet rows hold them); unknown colours counted per row. ``each``: how the rows are
    mapped (a thread pool's ``map`` reads them at once)."""
    mapping = resolve_label_map(label_map, label_set)

    def read(i: int) -> tuple:
        counter = UnknownColors()
        try:
            ids, inst = _read_row(batch, i, str(batch["name"][i]), label_set, strict_colors, counter, mapping)
        except UnreadableInput as e:  # named, skipped, and the run goes on (painted as nothing)
            return None, None, counter.unknown, str(e)
        return ids, inst, counter.unknown, ""

    rows = list(each(read, range(len(batch["name"]))))
    kept = {k: v for k, v in batch.items() if k in ("name", "input")}
    return {**kept, "labels": _column([r[0] for r in rows]), "instances": _column([r[1] for r in rows]),
            "unknown": np.array([r[2] for r in rows], dtype=np.int64),
            "unreadable": np.array([r[3] for r in rows], dtype=object)}


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


def write_stage(batch: dict[str, np.ndarray], output: str | None, artifact_sha256: str | None = None,
                gate=None, each: Callable = map) -> dict[str, np.ndarray]:
    """The writing stage (a CPU task): each picture encoded as PNG (carrying ``artifact_sha256``; mapped by
    ``each``, as in ``read_stage``) and written whole under its name, the batch published once ``gate`` lets it
    (see ``WriteGate``; record rows come back, ``output`` empty where nothing was published), or, without an output
    folder, returned as PNG bytes (``image_png``) for Parquet."""
    pngs = list(each(lambda image: None if _optional(image) is None else encode_picture(
        image, artifact_sha256=artifact_sha256), batch["image"]))
    node, address = _this_node()
    rows = len(pngs)
    where = {"name": batch["name"], "input": batch["input"], "host": np.array([socket.gethostname()] * rows),
             "node": np.array([node] * rows), "address": np.array([address] * rows),
             "pid": np.array([os.getpid()] * rows), "unreadable": batch["unreadable"],
             "unknown": batch.get("unknown", np.zeros(rows, dtype=np.int64)),
             "bytes": np.array([0 if png is None else len(png) for png in pngs])}
    if output is None:
        return {**where, "image_png": np.array(pngs, dtype=object)}
    store = Store(output)
    names = [picture_name(str(n)) for n in batch["name"]]
    token = gate_token(output, names)
    try:  # inside the gate before the first temporary: a stop waits until this task has removed its own
        published = _enter(gate, token) and store.write_all(
            [(n, png) for n, png in zip(names, pngs, strict=True) if png is not None], lambda: _still_open(gate))
    finally:
        if gate is not None:
            gate.leave.remote(token)  # after its enter: one caller's calls to an actor run in order
    return {**where, "output": np.array([store.uri(n) if png is not None and published else ""
                                         for n, png in zip(names, pngs, strict=True)])}


def gate_token(output: str, names: list[str]) -> str:
    """A batch's token in the gate, the same for every attempt at it: when Ray retries the batch of a worker that died
    inside the gate, the retry's leave also lets the dead attempt out, which a stop would otherwise wait for in
    vain (for ``STOP_WAIT_S``)."""
    return hashlib.sha256("\n".join([str(output), *names]).encode()).hexdigest()[:32]


def _enter(gate, token: str) -> bool:
    return _ask(gate, lambda: gate.enter.remote(token))


def _still_open(gate) -> bool:
    return _ask(gate, lambda: gate.is_open.remote())


def _ask(gate, call) -> bool:
    if gate is None:
        return True
    import ray

    try:
        return ray.get(call())
    except ray.exceptions.RayError:  # the gate went with its driver: write and publish nothing
        return False


def open_gate(ray):
    """A ``WriteGate`` on the driver's node (it goes with the driver, never with a worker node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(WriteGate).options(num_cpus=0, max_restarts=0, scheduling_strategy=here).remote()


def close_gate(ray, gate, wait_s: float = STOP_WAIT_S) -> int:
    """Close the gate and wait (up to ``wait_s``) for the tasks publishing: how many were still inside."""
    inside = ray.get(gate.close.remote(), timeout=wait_s)
    deadline = time.monotonic() + wait_s
    while inside and time.monotonic() < deadline:
        time.sleep(0.05)
        inside = ray.get(gate.count.remote(), timeout=wait_s)
    return inside


class NodeWatch:
    """Says once, for each node Ray declares dead during a run, that it is lost and Ray reschedules its work (the
    run pauses until Ray declares it: its health checks, about 15 s by default)."""

    def __init__(self, ray, log: Callable[[str], None], period_s: float = 1.0) -> None:
        self.ray, self.log, self.period_s = ray, log, period_s
        self.known: dict[str, dict] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="crn-node-watch", daemon=True)

    def __enter__(self) -> NodeWatch:
        self._look()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(5)

    def _watch(self) -> None:
        while not self.stopped.wait(self.period_s):
            try:
                self._look()
            except Exception:  # noqa: BLE001 - Ray shutting down under us: nothing more to say
                return

    def _look(self) -> None:
        for node in self.ray.nodes():
            node_id = node["NodeID"]
            if node.get("Alive"):
                self.known[node_id] = node
            elif self.known.pop(node_id, None) is not None and not self.stopped.is_set():
                self.log(f"node {node_id} ({node.get('NodeManagerAddress', '?')}, "
                         f"{node.get('NodeManagerHostname', '?')}) lost; Ray reschedules its work")


def _this_node() -> tuple[str, str]:
    """(Ray's node id, the node's address) where this task runs; empty outside Ray."""
    try:
        import ray
    except ImportError:
        return "", ""
    if not ray.is_initialized():
        return "", ""
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


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
    if options.workers < 1:
        raise UsageError(f"workers must be at least 1, got {options.workers}")
    manifest = Manifest.read(manifest_for(Path(artifact)))
    resolve_label_map(options.label_map, manifest.label_set)  # a mapping the set cannot take stops here, not in a task
    pattern, output = for_every_node(str(pattern)), for_every_node(str(output))
    to_parquet = _is_parquet(output)
    if to_parquet and not is_uri(output) and Path(output).exists() and not options.overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it, or another --output")
    RunRecord(output, None if to_parquet else Store(output)).refuse_a_live_run()  # before Ray: it only reads
    helper = ThreadPoolExecutor(1, thread_name_prefix="crn-inputs")
    try:
        # Listing the inputs and hashing the artifact need no Ray and write nothing: done while Ray starts, which
        # mostly waits for its processes. Parquet inputs are listed by Ray Data, after.
        early = None if _is_parquet(pattern) else helper.submit(_find_inputs, None, pattern, artifact)
        local = options.address is None and not _ray_initialized()
        with connected(options.address, log) as ray:
            if local:
                refuse_what_the_machine_cannot_hold(ray, artifact, options, uses_ray_data(pattern, output))
            found = early.result() if early else _find_inputs(ray, pattern, artifact)
            return _synthesize(ray, artifact, found, output, options, manifest, to_parquet, log)
    finally:
        helper.shutdown(wait=False, cancel_futures=True)  # an interrupt or a refused cluster waits for no listing


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def refuse_what_the_machine_cannot_hold(ray, artifact: Path, options: BatchOptions, ray_io: bool) -> None:
    """A local Ray instance never grows: a worker asking for more than this machine has would wait forever (on a
    cluster, an autoscaler may yet add the node, and the run says once what it waits for)."""
    settled = _settled(ray, artifact, options, ray_io)
    _, cpus, _, _ = _painting(artifact, settled)
    have = ray.cluster_resources()
    if cpus > have.get("CPU", 0.0) or settled.gpus_per_worker > have.get("GPU", 0.0):
        engine = target_of_engine_file(Path(artifact).name)
        fix = ("run it where Ray has a GPU (--ray ADDRESS), or paint with its ONNX artifact on the CPU"
               if engine is not None and engine.device == "cuda" else
               "lower --cpus-per-worker or --gpus-per-worker (0 paints on the CPU), or join a cluster that has them "
               "(--ray ADDRESS)")
        raise UsageError(f"each Ray worker asks for {cpus:g} CPU(s) and {settled.gpus_per_worker:g} GPU(s), and this "
                         f"machine has {have.get('CPU', 0.0):g} CPU(s) and {have.get('GPU', 0.0):g} GPU(s) for Ray: "
                         f"{fix}")


def for_every_node(location: str) -> str:
    """A local path as the tasks on every node open it: absolute (their working folder is not the driver's)."""
    return location if is_uri(location) else os.path.abspath(location)


def _is_parquet(location: str) -> bool:
    return location.rstrip("/").endswith(".parquet")


def uses_ray_data(pattern: str, output: str) -> bool:
    """Whether a run reads or writes Parquet, which it does on Ray Data (else on its own actors, see
    ``FolderPainter``)."""
    return _is_parquet(str(pattern)) or _is_parquet(str(output))


def _ray_data(ray):
    """Ray Data, imported when first needed (~1 s) and kept quiet."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray.data


@dataclass
class _Inputs:
    """The rows naming the label maps (a list, or a Ray Dataset for Parquet), their names in order, where each
    came from, the pattern that found them and the SHA-256 of the artifact that paints them."""
    rows: list | object
    names: list[str]
    where: dict[str, str]
    pattern: str
    digest: str


def _find_inputs(ray, pattern: str, artifact: Path) -> _Inputs:
    """``ray`` is needed for Parquet inputs only."""
    rows, names = _inputs(ray, pattern)
    where = {r["name"]: r["input"] for r in rows} if isinstance(rows, list) else {n: f"row {n}" for n in names}
    return _Inputs(rows, names, where, pattern, artifact_sha256(artifact))


def _synthesize(ray, artifact: Path, found: _Inputs, output: str, options: BatchOptions, manifest: Manifest,
                to_parquet: bool, log: Callable[[str], None]) -> BatchSummary:
    rows, names, digest = found.rows, found.names, found.digest
    store = None if to_parquet else Store(output)
    if store is not None:
        store.check_writable()
        check_shared(ray, store, log)
    record, done, repaint = _take_stock(output, store, found.where, names, digest, options.overwrite, log)
    record.begin(artifact, digest, found.pattern, options.workers)
    started = time.perf_counter()
    unknown = 0
    unreadable: list[str] = []
    state, left, gate, painters = "failed", 0, None, []
    try:
        gate = open_gate(ray) if store is not None else None
        with NodeWatch(ray, log):
            if len(names) > len(done):
                args = (ray, artifact, _todo(rows, done), output, options, manifest, digest, gate, record,
                        unreadable, log)
                if uses_ray_data(found.pattern, output):
                    unknown = _run_pipeline(*args)
                else:
                    unknown = _paint_on_workers(*args, painters=painters)
        state = "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        left = _stop(ray, gate)
        raise
    except BaseException:  # a worker's error: the others publish nothing more before the record's last word
        _stop(ray, gate)
        raise
    finally:
        _let_go(ray, painters)
        _end(record, state, len(done), time.perf_counter() - started, unreadable, found.where, log)
        if state == "interrupted":
            log(_stopped(record, output, len(names) - len(done), left, store is None))
    if unknown:
        log(f"warning: {unknown} pixels of colour label maps had colours outside the {manifest.label_set.name} "
            "palette (void)")
    return BatchSummary(len(names), record.written(record.run_id), len(done), time.perf_counter() - started,
                        options.workers, record.path, record.pids, unreadable, len(repaint))


def _take_stock(output: str, store: Store | None, inputs: dict[str, str], names: list[str], digest: str,
                overwrite: bool, log: Callable[[str], None]) -> tuple[RunRecord, set[str], list[str]]:
    """The output's record, brought up to what the output holds, and what this run does: (the record, the names
    it skips, those it paints again)."""
    record = RunRecord(output, store)
    for run_id in record.abandon_running():
        log(f"the record's run {run_id} was still running (its driver was killed or lost): now abandoned")
    disk = record.reconcile(inputs)
    done, repaint = _plan(names, disk, digest, overwrite, record, output)
    if disk.found:
        log(f"{disk.found} picture(s) in {output} were missing from its record (written by a run that was killed "
            "or interrupted): recorded now")
    if repaint:
        log(f"{len(repaint)} picture(s) in {output} were cut short (a crash or power loss): painting them again")
    return record, done, repaint


def _plan(names: list[str], disk, digest: str, overwrite: bool, record: RunRecord, output: str):
    """(The names whose pictures are there, of this artifact: skipped; those cut short: painted again). Pictures
    of another artifact (or of none named) are refused in one line unless ``overwrite``."""
    damaged = set(disk.damaged)
    repaint = [n for n in names if n in damaged]
    if overwrite:
        return set(), repaint
    others = [n for n in names if n in disk.artifacts and disk.artifacts[n] != digest]
    if others:
        record.save()  # what the listing found stays recorded
        made_by = disk.artifacts[others[0]]
        by = f"artifact sha256 {made_by[:12]}..." if made_by else "an artifact it does not name"
        raise UsageError(f"{output} holds {len(others)} picture(s) of another artifact ({picture_name(others[0])} "
                         f"was painted by {by}; this one is {digest[:12]}...): pass --overwrite to paint them again, "
                         "or give another --output")
    return {n for n in names if n in disk.artifacts}, repaint


def _todo(rows, done: set[str]):
    """The rows still to paint: a list (label files, NumPy shards), or a Ray Dataset (Parquet rows)."""
    if isinstance(rows, list):
        return [r for r in rows if r["name"] not in done]
    return rows.filter(lambda row: str(row["name"]) not in done, num_cpus=0) if done else rows


def _paint_on_workers(ray, artifact: Path, rows: list[dict], output: str, options: BatchOptions,
                      manifest: Manifest, digest: str, gate, record: RunRecord, unreadable: list[str],
                      log: Callable[[str], None], painters: list) -> int:
    """Label files or shards into a folder or prefix, on ``FolderPainter`` actors (added to ``painters``, which the
    caller lets go once the gate is closed) fed batches by the driver (see ``_Feed``; Ray restarts a killed worker
    and retries its batches). Each row that comes back enters the record. Returns the count of unknown colours."""
    options = _settled(ray, artifact, options, ray_io=False)
    device, cpus, threads, at_once = _painting(artifact, options)
    worker = ray.remote(FolderPainter).options(
        num_cpus=cpus, num_gpus=options.gpus_per_worker, max_concurrency=BATCHES_AT_ONCE, max_restarts=-1,
        max_task_retries=-1)
    painter = {"artifact": str(Path(artifact).resolve()), "device": device, "threads": threads, "at_once": at_once}
    painters += [worker.remote(painter, _reading(options, manifest), output, digest, gate,
                               io_threads(cpus, ray.cluster_resources()))
                 for _ in range(options.workers)]
    feed = _Feed(ray, rows, options.batch_size, painters)
    unknown = 0
    for result in feed.results(lambda waiting: log(_not_placed(ray, waiting, len(painters), cpus, options))):
        unknown += _take_rows(_rows_of(result), False, record, unreadable, log)
    return unknown


def io_threads(cpus: float, cluster: dict[str, float]) -> int:
    """Threads a painter reserving ``cpus`` decodes and encodes on (OpenCV's decoding and encoding run outside the
    GIL), on a cluster of ``cluster`` resources: a CPU painter, its CPUs (its painting takes them all the while;
    more threads would only take turns); a GPU painter, which reserves none, its GPU's share of the cluster's CPUs,
    at least two (encoding a large picture takes longer than painting it)."""
    if cpus:
        return max(1, int(cpus))
    return max(2, int(cluster.get("CPU", 0) // max(1.0, cluster.get("GPU", 1))))


def _let_go(ray, painters: list) -> None:
    """End a run's painters now, with the CPUs and GPUs they hold, not when their handles are collected (a failed
    run's traceback keeps them alive, and the next run in the same process would wait for their resources)."""
    for painter in painters:
        with contextlib.suppress(Exception):  # already gone, or Ray shutting down
            ray.kill(painter, no_restart=True)


class _Feed:
    """Hands ``rows`` out in batches of ``size`` to each worker once Ray has placed it (a worker that never is
    leaves the run to the others): ``BATCHES_AT_ONCE + BATCHES_QUEUED`` at a time, the next as one comes back. A
    worker's first batch is a ``FIRST_BATCH_PART`` of one, so that its first pictures come out as soon as it is up,
    not after two whole batches."""

    def __init__(self, ray, rows: list[dict], size: int, workers: list) -> None:
        self.ray, self.rows, self.size, self.at = ray, rows, size, 0
        self.starting = {w.__ray_ready__.remote(): w for w in workers}
        self.painting: dict = {}  # a batch's result -> the worker painting it

    def results(self, say_waiting: Callable[[int], None]) -> Iterator[dict[str, np.ndarray]]:
        """Each batch's record rows as it comes back; ``say_waiting(count)`` once, where workers have not started
        ``PLACING_S`` after the first was asked for."""
        deadline = time.monotonic() + PLACING_S
        while self.painting or (self.starting and self.at < len(self.rows)):
            waiting = bool(self.starting) and deadline is not None
            done, _ = self.ray.wait([*self.painting, *self.starting], num_returns=1,
                                    timeout=max(0.0, deadline - time.monotonic()) if waiting else None)
            if waiting and time.monotonic() >= deadline:
                say_waiting(len(self.starting))
                deadline = None
            if not done:
                continue
            if done[0] in self.starting:
                self._start(self.starting.pop(done[0]), done[0])
                continue
            worker = self.painting.pop(done[0])
            result = self._get(done[0])  # a failed batch hands out no more
            self._give(worker, self.size)
            yield result

    def _start(self, worker, ready) -> None:
        if self.at >= len(self.rows):  # every batch is out already: this one is not needed, whatever it says
            return
        self._get(ready)  # a worker that could not start says why here
        self._give(worker, max(1, self.size // FIRST_BATCH_PART))
        for _ in range(BATCHES_AT_ONCE + BATCHES_QUEUED - 1):
            self._give(worker, self.size)

    def _get(self, ref):
        """``ref``'s value; a worker's error in one line where it is one of the project's (a label map refused,
        the artifact missing on a node), else as Ray tells it."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, CrnError):
                raise cause from None
            if getattr(e, "actor_init_failed", False):  # Ray keeps only the text of what its constructor raised
                raise CrnError(f"a Ray worker could not start: {str(e).strip().splitlines()[-1]}") from e
            raise

    def _give(self, worker, size: int) -> None:
        if self.at < len(self.rows):
            self.painting[worker.paint.remote(self.rows[self.at:self.at + size])] = worker
            self.at += size


def _not_placed(ray, waiting: int, workers: int, cpus: float, options: BatchOptions) -> str:
    gpus = f" and {options.gpus_per_worker:g} GPU(s)" if options.gpus_per_worker else ""
    have, free = ray.cluster_resources(), ray.available_resources()
    return (f"{waiting} of {workers} Ray worker(s) not started after {PLACING_S:g} s (not placed yet, or still "
            f"opening the artifact): each asks for {cpus:g} CPU(s){gpus}; the cluster has {have.get('CPU', 0):g} "
            f"CPU(s), {have.get('GPU', 0):g} GPU(s), of which {free.get('CPU', 0):g} and {free.get('GPU', 0):g} "
            "free. The run goes on with the workers started; the others join when they start (to fit now: fewer "
            "--workers, or a smaller --cpus-per-worker or --gpus-per-worker)")


def _rows_of(columns: dict[str, np.ndarray]) -> list[dict]:
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _run_pipeline(ray, artifact: Path, dataset, output: str, options: BatchOptions, manifest: Manifest,
                  digest: str, gate, record: RunRecord, unreadable: list[str], log: Callable[[str], None]) -> int:
    """With Parquet in or out, on Ray Data: paint and write; each row that comes back enters the record. Returns
    the count of unknown colours."""
    to_parquet = _is_parquet(output)
    if isinstance(dataset, list):
        dataset = _ray_data(ray).from_items(dataset)
    painted = _pipeline(ray, artifact, dataset, None if to_parquet else output, options, manifest, digest, gate)
    if to_parquet:
        painted = painted.materialize()
        painted.filter(lambda row: not row["unreadable"], num_cpus=0).select_columns(
            ["name", "image_png"]).write_parquet(output)
        painted = painted.drop_columns(["image_png"])
    return _take_rows(painted.iter_rows(), to_parquet, record, unreadable, log)


def _take_rows(rows, to_parquet: bool, record: RunRecord, unreadable: list[str], log: Callable[[str], None]) -> int:
    """Each painted row that comes back enters the record; an unreadable one is named. Returns the count of unknown
    colours."""
    unknown = 0
    for row in rows:
        if row["unreadable"]:
            unreadable.append(str(row["unreadable"]))
            log(f"warning: {unreadable[-1]}; skipped, no picture for it")
            continue
        if to_parquet or row["output"]:
            record.add(row)
        unknown += int(row.get("unknown", 0))
    return unknown


def _stop(ray, gate) -> int:
    """An interrupt: no batch is published once the gate is closed. Returns how many writing tasks were still
    publishing after ``STOP_WAIT_S`` (-1: the gate did not answer)."""
    if gate is None:
        return 0
    try:
        return close_gate(ray, gate)
    except ray.exceptions.RayError:
        return -1


def _stopped(record: RunRecord, output: str, todo: int, left: int, parquet: bool) -> str:
    written = f"{record.written(record.run_id)} of {todo} picture(s) painted by this run, each in the record"
    if parquet:
        return f"stopping: Ray Data's Parquet writer may still finish files of {output}; {written}"
    if left:
        return (f"stopping: {'some' if left < 0 else left} writing task(s) did not say they were through within "
                f"{STOP_WAIT_S:g} s (a worker killed and not yet back, or a node lost): the next run records what they "
                f"published; {written}")
    return (f"stopped: no more pictures will be written into {output}; {written}; run the same command again to "
            "paint the rest")


def _end(record: RunRecord, state: str, skipped: int, seconds: float, unreadable: list[str], inputs: dict,
         log: Callable[[str], None]) -> None:
    """The run's last word in the record, however it ends: reconciled with the output, then its final state."""
    try:
        record.reconcile(inputs)
    except CrnError as e:  # the listing failed: the next run reconciles it
        log(f"warning: {e}; the next run brings the record up to date")
    record.finish(state, skipped, seconds, unreadable)


def _inputs(ray, pattern: str):
    """(rows naming their label maps: a list, or a Ray Dataset for Parquet; the names in order)."""
    if _is_parquet(pattern):
        dataset = _ray_data(ray).read_parquet(str(pattern))
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
              artifact_sha256: str | None = None, gate=None):
    """Read and decode (CPU tasks) -> synthesis (actor pool) -> encode and write (CPU tasks), overlapping."""
    options = _settled(ray, artifact, options, ray_io=True)  # Ray Data's Parquet readers and writers take a CPU
    stage = {"num_cpus": _stage_cpus(ray.cluster_resources().get("CPU", 0.0), options),
             "batch_size": options.batch_size, "batch_format": "numpy",
             "compute": ray.data.TaskPoolStrategy(size=max(2, options.workers))}
    decoded = dataset.map_batches(read_stage, **stage, fn_kwargs=_reading(options, manifest))
    return paint_with_pool(decoded, artifact, options).map_batches(
        write_stage, **stage, fn_kwargs={"output": output, "artifact_sha256": artifact_sha256, "gate": gate})


def _settled(ray, artifact: Path, options: BatchOptions, ray_io: bool) -> BatchOptions:
    """``options`` with what the cluster decides filled in, for this run only (the caller's stay as given): a GPU
    per worker where the cluster has GPUs and the artifact takes one, else an even share of the free CPUs (less
    one left to Ray Data's own Parquet readers and writers where ``ray_io``)."""
    if options.gpus_per_worker is None:
        has_gpus = ray.cluster_resources().get("GPU") and not runs_on_cpu(artifact)
        options = replace(options, gpus_per_worker=1.0 if has_gpus else 0.0)
    if options.cpus_per_worker is None and not options.gpus_per_worker:
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        free = ray.available_resources().get("CPU", 0.0) - (1.0 if ray_io else 0.0)
        options = replace(options, cpus_per_worker=worker_cpus(nodes, free, options.workers))
    return options


def _reading(options: BatchOptions, manifest: Manifest) -> dict:
    """``read_stage``'s arguments."""
    label_map = None if options.label_map is None else resolve_label_map(options.label_map, manifest.label_set).mapping
    return {"label_set": manifest.label_set, "strict_colors": options.strict_colors, "label_map": label_map}


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
    device, cpus, threads, at_once = _painting(artifact, options)
    import ray

    return dataset.map_batches(
        Painter, batch_size=options.batch_size, compute=ray.data.ActorPoolStrategy(size=options.workers),
        num_gpus=options.gpus_per_worker, num_cpus=cpus, batch_format="numpy",
        fn_constructor_kwargs={"artifact": str(Path(artifact).resolve()), "device": device, "threads": threads,
                               "at_once": at_once})


def _painting(artifact: Path, options: BatchOptions) -> tuple[str, float, int | None, int]:
    """(device, CPUs reserved, threads per map, maps at once) of each painter."""
    device = "auto" if options.gpus_per_worker else "cpu"
    engine = target_of_engine_file(Path(artifact).name)
    if engine is not None and engine.device == "cuda" and not options.gpus_per_worker:
        raise UsageError(f"{artifact} is a {engine.runtime} engine: give each worker a GPU (--gpus-per-worker 1)")
    if options.gpus_per_worker:
        return device, 0, options.threads, 1
    reserved = 1.0 if options.cpus_per_worker is None else options.cpus_per_worker
    manifest = Manifest.read(manifest_for(Path(artifact)))
    pixels = max(np.prod(manifest.resolution), np.prod(manifest.output_resolution))  # PosGen paints larger
    return (device, reserved, *cpu_painting(int(reserved), int(pixels), options.threads))


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

        checks = {f"node {n['NodeID']} ({n['NodeManagerAddress']})": sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(store._path(marker))
            for n in nodes}
        blind = [node for node, ref in checks.items() if not ray.get(ref, timeout=60)]
    finally:
        store.delete(marker)
    if blind:
        raise UsageError(f"{store.location} is not shared by every node of the cluster (not visible on "
                         f"{', '.join(blind)}): use object storage (s3://...) or a filesystem every node mounts")
    log(f"{store.location}: shared by all {len(nodes)} nodes")

