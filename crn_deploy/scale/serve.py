"""A synthesis endpoint on Ray Serve: replicas of one artifact (each opens it once and holds a GPU, or
CPU threads), requests batched up to the artifact's batch size.

Routes:
- ``POST /synthesize`` with ``Content-Type: image/png``: a label map PNG (8-bit ids, or colours in the
  artifact's palette) -> the picture as PNG. With ``Content-Type: application/x-crn-labels``: raw uint8
  ids, ``X-Shape: H,W``; where the artifact takes instance maps, ``X-Instances: 1`` and H*W int32
  (little-endian) after the ids. ``Accept: application/octet-stream`` returns raw RGB uint8 with
  ``X-Shape: H,W,3`` instead of PNG.
- ``GET /healthz``: the replica is alive. ``GET /ready``: the artifact is open (its manifest's summary).

Bad input gets a 4xx with the runtime's one-line message, and the replica keeps serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import CrnError, UsageError
from ..data.images import encode_picture
from ..data.label_maps import decode_label_map

LABELS_TYPE = "application/x-crn-labels"
_started = threading.Event()  # serve.start ran in this process
RAW_TYPE = "application/octet-stream"


@dataclass
class ServeOptions:
    port: int = 8000
    host: str = "127.0.0.1"
    replicas: int = 1
    gpus_per_replica: float | None = None  # None: 1 where the cluster has GPUs, else 0
    max_batch: int | None = None  # None: the artifact's batch size
    batch_wait_ms: float = 5.0
    threads: int | None = None  # ONNX Runtime threads per CPU replica
    address: str | None = None  # None: a local Ray instance
    name: str = "crn"


class Replica:
    """The body of one replica (kept free of Ray so it can be tested and reused)."""

    def __init__(self, artifact: str, device: str, threads: int | None) -> None:
        from .. import runtime

        self.synth = runtime.load(artifact, device=device, threads=threads)

    def summary(self) -> dict:
        m = self.synth.manifest
        return {"artifact": m.artifact, "family": m.family_name, "precision": str(m.precision), "batch": m.batch,
                "resolution": list(m.resolution), "output_resolution": list(m.output_resolution),
                "label_set": m.label_set.name, "inputs": [s.name for s in m.input_specs]}

    def decode(self, content_type: str, headers, body: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint8 ids [H,W], int32 instances [H,W] or None) from a request; UsageError if malformed."""
        kind = (content_type or "").split(";")[0].strip().lower()
        if kind == "image/png":
            return decode_label_map(body, self.synth.label_set, name="the label PNG", unknown=self.synth.unknown_colors,
                                    png_only=True), None
        if kind == LABELS_TYPE:
            return self._raw(headers, body)
        raise UsageError(f"Content-Type must be image/png or {LABELS_TYPE}, got {content_type or 'none'}")

    def _raw(self, headers, body: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            h, w = (int(v) for v in headers.get("x-shape", "").split(","))
        except ValueError:
            raise UsageError("raw label maps need the header X-Shape: H,W") from None
        if h < 1 or w < 1:
            raise UsageError(f"X-Shape must be positive, got {h},{w}")
        with_instances = headers.get("x-instances", "0") == "1"
        expected = h * w * (5 if with_instances else 1)
        if len(body) != expected:
            raise UsageError(f"the body holds {len(body)} bytes; X-Shape {h},{w} needs {expected} (uint8 ids"
                             f"{' + int32 instance ids' if with_instances else ''})")
        ids = np.frombuffer(body[: h * w], np.uint8).reshape(h, w)
        instances = np.frombuffer(body[h * w :], "<i4").reshape(h, w).astype(np.int32) if with_instances else None
        return ids, instances

    def paint(self, items: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray | CrnError]:
        """Pictures for several requests: those of the artifact's size in one call, the others one by one;
        an error is returned in its request's place, not raised."""
        results: list = [None] * len(items)
        size = self.synth.resolution
        stackable = [i for i, (ids, inst) in enumerate(items) if ids.shape == size
                     and (inst is None) == (items[0][1] is None)]
        if len(stackable) > 1:
            ids = np.stack([items[i][0] for i in stackable])
            instances = None if items[stackable[0]][1] is None else np.stack([items[i][1] for i in stackable])
            try:
                for i, picture in zip(stackable, self.synth(ids, instances=instances), strict=True):
                    results[i] = picture
            except CrnError as e:
                for i in stackable:
                    results[i] = e
        for i, (ids, instances) in enumerate(items):
            if results[i] is None:
                try:
                    results[i] = self.synth(ids, instances=instances)
                except CrnError as e:
                    results[i] = e
        return results


def build_app(artifact: str, options: ServeOptions, gpus: float):
    """The Ray Serve application (a bound deployment) for ``artifact``."""
    from ray import serve
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    from ..manifest import Manifest, manifest_for

    batch = options.max_batch or Manifest.read(manifest_for(artifact)).batch
    device = "auto" if gpus else "cpu"

    @serve.deployment(name=options.name, num_replicas=options.replicas,
                      ray_actor_options={"num_gpus": gpus, "num_cpus": 0 if gpus else 1},
                      health_check_period_s=2, health_check_timeout_s=30)
    class SynthesisDeployment:
        def __init__(self) -> None:
            self.replica = Replica(artifact, device, options.threads)

        @serve.batch(max_batch_size=max(batch, 1), batch_wait_timeout_s=options.batch_wait_ms / 1000)
        async def paint(self, items: list) -> list:
            return self.replica.paint(items)

        async def __call__(self, request) -> Response:
            route = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            if route == "healthz":
                return JSONResponse({"status": "ok"})
            if route == "ready":
                return JSONResponse({"status": "ready", **self.replica.summary()})
            if route != "synthesize":
                return PlainTextResponse("not found: use POST /synthesize, GET /healthz or GET /ready", 404)
            if request.method != "POST":
                return PlainTextResponse("/synthesize takes POST", 405)
            try:
                item = self.replica.decode(request.headers.get("content-type", ""), request.headers,
                                           await request.body())
            except UsageError as e:
                return PlainTextResponse(str(e), 415 if "Content-Type" in str(e) else 400)
            picture = await self.paint(item)
            if isinstance(picture, CrnError):
                return PlainTextResponse(str(picture), 400 if isinstance(picture, UsageError) else 500)
            if RAW_TYPE in request.headers.get("accept", ""):
                return Response(picture.tobytes(), media_type=RAW_TYPE,
                                headers={"X-Shape": ",".join(map(str, picture.shape))})
            return Response(encode_picture(picture), media_type="image/png")

    return SynthesisDeployment.bind()


def start(artifact: str, options: ServeOptions, log=print):
    """Start (or update) the application on a local Ray instance or an existing cluster; returns its URL."""
    from ray import serve

    from .batch import connect

    ray = connect(options.address, log)
    gpus = options.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU") else 0.0
    serve.start(http_options={"host": options.host, "port": options.port})
    _started.set()
    serve.run(build_app(str(artifact), options, gpus), name=options.name, route_prefix="/")
    return f"http://{options.host}:{options.port}"


def shutdown() -> None:
    """Shut Serve down where this process started it (serve.shutdown would wait on a controller that
    never was)."""
    from ray import serve

    if _started.is_set():
        serve.shutdown()
        _started.clear()
