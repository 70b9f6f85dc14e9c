"""A synthesis endpoint on Ray Serve: replicas of one artifact (each opens it once and holds a GPU, or
CPU threads), requests batched up to the artifact's batch size.

Routes:
- ``POST /synthesize`` with ``Content-Type: image/png``: a label map PNG (8-bit ids, or colours in the
  artifact's palette) -> the picture as PNG. With ``Content-Type: application/x-crn-labels``: raw uint8
  ids, ``X-Shape: H,W``; where the artifact takes instance maps, ``X-Instances: 1`` and H*W int32
  (little-endian) after the ids. ``Accept: application/octet-stream`` returns raw RGB uint8 with
  ``X-Shape: H,W,3`` instead of PNG. With a label mapping (``crn-serve --label-map``), PNGs and raw ids are
  read through it; a PNG with ``X-Frame-Labels: <JSON>`` is one frame named by its own labels (Omniverse
  Replicator's idToLabels: 16-bit ids or RGBA colours).
- ``GET /healthz``: the replica is alive. ``GET /ready``: the replica can take work — its artifact open and
  fewer requests in hand than it holds at most (503 otherwise); the manifest's summary.

Bounded: a label map must have the artifact's label size (a PNG's size is read from its header before it is
decoded; a 400 names both sizes); a body over ``max_body_bytes`` (default: from the artifact's size) is a 413
before it is read whole; decoding, synthesis and encoding run off the event loop, in a worker thread, so
that health checks and other requests are answered meanwhile. Bad input gets a 4xx with the runtime's
one-line message, and the replica keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import CrnError, UsageError
from ..data.images import encode_picture
from ..data.label_mapping import LabelMapping
from ..data.label_maps import decode_label_map

LABELS_TYPE = "application/x-crn-labels"
FRAME_LABELS_HEADER = "X-Frame-Labels"
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
    threads: int | None = None  # threads per CPU replica (ONNX Runtime or an OpenVINO engine)
    address: str | None = None  # None: a local Ray instance
    max_body_bytes: int | None = None  # None: from the artifact's label size (room for raw ids and instance ids)
    max_in_hand: int | None = None  # requests a replica holds at once before /ready says 503 (None: 4 batches)
    name: str = "synthesis"  # the Ray Serve application's name
    label_map: LabelMapping | str | None = None  # the label mapping request bodies are read through


class Replica:
    """The body of one replica (kept free of Ray so it can be tested and reused)."""

    def __init__(self, artifact: str, device: str, threads: int | None, max_body_bytes: int | None = None,
                 max_in_hand: int | None = None, label_map=None) -> None:
        from .. import runtime

        self.synth = runtime.load(artifact, device=device, threads=threads, label_map=label_map)
        h, w = self.synth.resolution
        self.max_body_bytes = max_body_bytes or body_cap(h, w)
        self.max_in_hand = max_in_hand or 4 * max(1, self.synth.batch)
        self.in_hand = 0

    def ready(self) -> bool:
        return self.synth.backend.is_open and self.in_hand < self.max_in_hand

    def summary(self) -> dict:
        m = self.synth.manifest
        return {"artifact": m.artifact, "family": m.family_name, "precision": str(m.precision), "batch": m.batch,
                "resolution": list(m.resolution), "output_resolution": list(m.output_resolution),
                "label_set": m.label_set.name, "inputs": [s.name for s in m.input_specs]}

    def decode(self, content_type: str, headers, body: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint8 class ids [H,W] of the label set, int32 instances [H,W] or None) from a request, through the
        label mapping where the replica has one; UsageError if malformed."""
        kind = (content_type or "").split(";")[0].strip().lower()
        if kind == "image/png":
            self._check_size(png_size(body), "the label PNG")
            frame = headers.get(FRAME_LABELS_HEADER.lower())
            return decode_label_map(body, self.synth.label_set, name="the label PNG", unknown=self.synth.unknown_colors,
                                    png_only=True, label_map=self.synth.label_map,
                                    frame_labels=frame.encode() if frame else None), None
        if kind == LABELS_TYPE:
            ids, instances = self._raw(headers, body)
            return self.synth.label_ids(ids), instances
        raise UsageError(f"Content-Type must be image/png or {LABELS_TYPE}, got {content_type or 'none'}")

    def _check_size(self, size: tuple[int, int], what: str) -> None:
        if tuple(size) != tuple(self.synth.resolution):
            (h, w), (eh, ew) = size, self.synth.resolution
            raise UsageError(f"{what} is {h}x{w}; this endpoint's artifact takes {eh}x{ew} label maps: resize it "
                             "(nearest) before sending")

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
        self._check_size((h, w), "the raw label map")
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
                for i, picture in zip(stackable, self.synth(ids, instances=instances, mapped=True), strict=True):
                    results[i] = picture
            except CrnError as e:
                for i in stackable:
                    results[i] = e
        for i, (ids, instances) in enumerate(items):
            if results[i] is None:
                try:
                    results[i] = self.synth(ids, instances=instances, mapped=True)
                except CrnError as e:
                    results[i] = e
        return results


def body_cap(height: int, width: int) -> int:
    """The largest body a replica reads: raw ids and int32 instance ids of its label size, or a PNG of them (a
    colour PNG that does not compress stays under 4 bytes a pixel), plus 1 MiB."""
    return 5 * height * width + (1 << 20)


def png_size(body: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk, without decoding it."""
    if len(body) < 24 or not body.startswith(b"\x89PNG\r\n\x1a\n") or body[12:16] != b"IHDR":
        raise UsageError("the label map is not a PNG (send it as a lossless PNG)")
    width, height = struct.unpack(">II", body[16:24])
    return height, width


async def read_body(request, cap: int) -> bytes:
    """The request's body, refused (``BodyTooLarge``) as soon as it passes ``cap`` bytes, never read whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge(int(declared), cap)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(size, cap)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyTooLarge(UsageError):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"the body has {'at least ' if size else ''}{size} bytes, over this endpoint's {cap}: "
                         "send one label map of the artifact's size")


def build_app(artifact: str, options: ServeOptions, gpus: float):
    """The Ray Serve application (a bound deployment) for ``artifact``."""
    from ray import serve
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    from ..manifest import Manifest, manifest_for

    batch = options.max_batch or Manifest.read(manifest_for(artifact)).batch
    device = "auto" if gpus else "cpu"

    @serve.deployment(name=options.name, num_replicas=options.replicas,
                      ray_actor_options={"num_gpus": gpus, "num_cpus": 0 if gpus else 1},
                      health_check_period_s=2, health_check_timeout_s=30,
                      graceful_shutdown_wait_loop_s=0.25)  # drained replicas stop within a quarter second
    class SynthesisDeployment:
        def __init__(self) -> None:
            self.replica = Replica(artifact, device, options.threads, options.max_body_bytes, options.max_in_hand,
                                   options.label_map)

        @serve.batch(max_batch_size=max(batch, 1), batch_wait_timeout_s=options.batch_wait_ms / 1000)
        async def paint(self, items: list) -> list:
            return await asyncio.to_thread(self.replica.paint, items)  # off the event loop

        async def __call__(self, request) -> Response:
            route = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            if route == "healthz":
                return JSONResponse({"status": "ok"})
            if route == "ready":
                ready = self.replica.ready()
                return JSONResponse({"status": "ready" if ready else "busy", "in_hand": self.replica.in_hand,
                                     **self.replica.summary()}, 200 if ready else 503)
            if route != "synthesize":
                return PlainTextResponse("not found: use POST /synthesize, GET /healthz or GET /ready", 404)
            if request.method != "POST":
                return PlainTextResponse("/synthesize takes POST", 405)
            self.replica.in_hand += 1
            try:
                return await self._synthesize(request)
            finally:
                self.replica.in_hand -= 1

        async def _synthesize(self, request) -> Response:
            try:
                body = await read_body(request, self.replica.max_body_bytes)
                item = await asyncio.to_thread(self.replica.decode, request.headers.get("content-type", ""),
                                               request.headers, body)
            except BodyTooLarge as e:
                return PlainTextResponse(str(e), 413)
            except UsageError as e:
                return PlainTextResponse(str(e), 415 if "Content-Type" in str(e) else 400)
            picture = await self.paint(item)
            if isinstance(picture, CrnError):
                return PlainTextResponse(str(picture), 400 if isinstance(picture, UsageError) else 500)
            if RAW_TYPE in request.headers.get("accept", ""):
                return Response(picture.tobytes(), media_type=RAW_TYPE,
                                headers={"X-Shape": ",".join(map(str, picture.shape))})
            return Response(await asyncio.to_thread(encode_picture, picture), media_type="image/png")

    return SynthesisDeployment.bind()


def check_label_map(artifact, options: ServeOptions) -> None:
    """A mapping the artifact's label set cannot take is refused here, once, before Ray: not in every replica."""
    from ..data.label_mapping import resolve_label_map
    from ..manifest import Manifest, manifest_for

    if options.label_map is not None:
        resolve_label_map(options.label_map, Manifest.read(manifest_for(artifact)).label_set)


def check_port(options: ServeOptions) -> None:
    """Where Serve's HTTP proxy will run on this machine (a local Ray instance), an address it cannot listen on is
    refused before Ray starts; Serve would fail on it seconds later, in a traceback from its proxy."""
    if options.address is not None:  # the proxy runs on the cluster's head node, maybe already on this port
        return
    try:  # bound as Serve's proxy binds it: IPv6 for an IPv6 address only, no SO_REUSEADDR
        with socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((options.host, options.port))
    except (OSError, UnicodeError) as error:  # UnicodeError: a host name no resolver takes
        raise UsageError(f"cannot listen on {where(options.host, options.port)} {_why_not(error)}") from None


def _why_not(error: Exception) -> str:
    code = getattr(error, "errno", None)
    if code == errno.EADDRINUSE:
        return "(the port is in use): stop what holds it, or pick another --port"
    if code == errno.EACCES:
        return "(permission denied: ports below 1024 need privileges): pick a --port of 1024 or more"
    if isinstance(error, (socket.gaierror, UnicodeError)) or code == errno.EADDRNOTAVAIL:
        return "(not an address of this machine): give --host one of its addresses, 127.0.0.1, or 0.0.0.0 for all"
    return f"({getattr(error, 'strerror', None) or error}): pick another --port or --host"


def where(host: str, port: int) -> str:
    """host:port as a URL names it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start(artifact: str, options: ServeOptions, log=print):
    """Start (or update) the application on a local Ray instance, the Ray this process already runs, or an existing
    cluster; returns its URL."""
    import ray
    from ray import serve

    from .batch import runs_on_cpu
    from .cluster import connect

    check_label_map(artifact, options)
    if not ray.is_initialized():  # a local instance starts here, and Serve in it
        check_port(options)
    connect(options.address, log)
    gpus = options.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU") and not runs_on_cpu(artifact) else 0.0
    _start_serve(ray, serve, options)
    _started.set()
    serve.run(build_app(str(artifact), options, gpus), name=options.name, route_prefix="/")
    return f"http://{where(options.host, options.port)}"


ALL_INTERFACES = ("0.0.0.0", "::")


def _start_serve(ray, serve, options: ServeOptions) -> None:
    """Serve, listening where asked. One already running keeps its address (Serve would ignore ours with a warning,
    and the URL said would be wrong): taken where it listens on the port asked, on the host asked or on every
    interface. Serve that this call started and that cannot listen is taken down again, not left retrying its
    proxy on the cluster."""
    running = _running_serve_http()
    if running is not None:
        if running.port != options.port or running.host not in (options.host, *ALL_INTERFACES):
            raise UsageError(f"Ray Serve already runs on this Ray, listening on {where(running.host, running.port)}, "
                             f"and cannot move while it runs: pass --host {running.host} --port {running.port}, or "
                             "take it down first (`serve shutdown`, which ends all its applications)")
        return
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
    except ray.exceptions.RayError as error:  # taken since check_port, or on a cluster's head node
        if "Failed to bind" not in str(error):
            raise
        with contextlib.suppress(Exception):  # the one line below says what matters
            serve.shutdown()
        raise UsageError(f"Ray Serve's proxy cannot listen on {where(options.host, options.port)} (in use, or not an "
                         "address of the node it runs on, the head node on a cluster): stop what holds the port "
                         "there, or pick another --port or --host") from None


def _running_serve_http():
    """The HTTP options of the Serve that runs on the connected Ray, or None where none runs (or this Ray cannot
    say). Asked as serve.start asks: a client cached from an earlier Ray instance of this process is checked alive
    first. Serve's public API has no read-only way to ask."""
    try:
        from ray.serve.context import _get_global_client
    except ImportError:  # another Ray: Serve then warns that it keeps its address, and the URL may be wrong
        return None
    try:
        from ray.serve.context import _check_cached_client_alive
    except ImportError:  # an older Ray: its cached client is the current one
        client = None
    else:
        client, _ = _check_cached_client_alive()
    if client is None:
        client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else client.http_config


def shutdown(name: str = ServeOptions.name) -> None:
    """Take down the application this process started, its replicas finishing the requests they hold. Serve
    itself ends with a local Ray instance, and stays on a cluster for its other applications. (serve.shutdown
    would also wait on a controller that never was where nothing started, and its controller's last task is
    reported failed on the terminal.)"""
    from ray import serve

    if _started.is_set():
        serve.delete(name)
        _started.clear()
