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

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import read_instance_image, read_label_image, write_image
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
    """A Ray Data actor: opens the artifact once, then paints batches of label files (``path``, ``name``
    columns) into the output folder, or batches of label arrays (``labels``, optional ``instances``)
    into an ``image`` column."""

    def __init__(self, artifact: str, output: str | None = None, device: str = "auto",
                 threads: int | None = None, strict_colors: bool = False) -> None:
        from .. import runtime

        self.synth = runtime.load(artifact, device=device, threads=threads)
        self.output = Path(output) if output else None
        self.strict_colors = strict_colors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "path" in batch:
            return self._files(batch)
        instances = batch.get("instances")
        images = [self.synth(labels, instances=None if instances is None else instances[i])
                  for i, labels in enumerate(batch["labels"])]
        return {**batch, "image": np.stack(images)}

    def _files(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = []
        for path, name in zip(batch["path"], batch["name"], strict=True):
            ids = read_label_image(Path(path), self.synth.label_set, strict_colors=self.strict_colors)
            instances = read_instance_image(Path(path)) if self.synth.takes_instances else None
            target = picture_path(self.output, str(name))
            write_image(target, self.synth(ids, instances=instances))
            written.append(str(target))
        count = len(written)
        return {"name": batch["name"], "input": batch["path"], "output": np.array(written),
                "pid": np.full(count, os.getpid())}


def picture_path(folder: Path, name: str) -> Path:
    """Where single-process crn-run's folder sink writes the picture of the label file ``name``."""
    return Path(folder) / f"{name}.png"


def synthesize_files(artifact: Path, pattern: str, output: Path, options: BatchOptions,
                     log: Callable[[str], None] = print) -> BatchSummary:
    """Every label image of a folder or glob (Cityscapes ``*_labelIds.png`` with the ``*_instanceIds.png``
    beside, where the artifact takes instance maps) -> ``output/<name>.png`` on a Ray cluster."""
    manifest = Manifest.read(manifest_for(Path(artifact)))
    source = FolderSource(pattern, manifest.label_set)
    ensure_writable_dir(output)
    rows = [{"path": str(p), "name": n} for p, n in zip(source.files, source.names, strict=True)
            if options.overwrite or not picture_path(output, n).is_file()]
    skipped = len(source.files) - len(rows)
    started = time.perf_counter()
    records = _run(artifact, rows, output, options, log) if rows else []
    seconds = time.perf_counter() - started
    record = Path(output) / RECORD_NAME
    write_json_atomic(record, {"artifact": str(Path(artifact).resolve()), "input": str(pattern),
                               "written": sorted(({"name": r["name"], "input": r["input"], "output": r["output"]}
                                                  for r in records), key=lambda r: r["name"]),
                               "skipped": skipped, "seconds": round(seconds, 3), "workers": options.workers})
    return BatchSummary(len(source.files), len(records), skipped, seconds, options.workers, record,
                        {int(r["pid"]) for r in records})


def _run(artifact: Path, rows: list[dict], output: Path, options: BatchOptions, log) -> list[dict]:
    ray = connect(options.address, log)
    if options.gpus_per_worker is None:
        options.gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU") else 0.0
    dataset = ray.data.from_items(rows)
    painted = paint_with_pool(dataset, artifact, options, output=output)
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
