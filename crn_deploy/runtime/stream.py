"""The streaming loop: decode, synthesize and encode overlap on three threads joined by bounded
queues, so the sustained rate is set by the slowest stage, and memory stays bounded (backpressure).

Policies: ``lossless`` (every frame, in order) and ``live`` (a deadline per frame at ``fps``; when
inference falls behind, the oldest waiting map is dropped and counted). A map identical to the
previous one is not synthesized again (simulators at rest). Shutdown is clean at the end of the
stream, on an error in any stage (re-raised naming the stage) and on Ctrl-C; the sink is always
finalised.

The decode stage hands on class ids of the artifact's label set: sources that decode files or frames
(``yields_label_ids``) map them themselves; the arrays of any other source (a simulator's) are read
there as the synthesizer reads a caller's maps, through its label mapping.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from ..data.images import resize_image, resize_labels
from ..data.streams import LabelFrame, Named
from ..errors import CrnError, UsageError
from ..labels import VOID_ID
from .timing import summarize
from .synthesizer import OutputSize, Synthesizer

POLICIES = ("lossless", "live")
RESIZE_MODES = ("stretch", "letterbox")
_END = object()
LATENCY_WINDOW = 10_000


@dataclass
class StreamOptions:
    policy: str = "lossless"
    fps: float | None = None  # live: the frame deadline is 1/fps; also the output video's rate
    queue_size: int = 4
    skip_identical: bool = True
    resize: str = "stretch"  # or letterbox: keep the aspect ratio, pad with void
    output_size: OutputSize | str = OutputSize.INPUT
    side_by_side: bool = False  # labels | synthesized
    overlay_fps: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UsageError(f"unknown policy '{self.policy}': choose {' or '.join(POLICIES)}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"unknown resize mode '{self.resize}': choose {' or '.join(RESIZE_MODES)}")
        self.output_size = OutputSize.of(self.output_size)
        if self.policy == "live" and not self.fps:
            raise UsageError("the live policy needs a frame rate (--fps N) to set its deadline")
        if self.queue_size < 1:
            raise UsageError("queue size must be at least 1")


@dataclass
class StreamStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    skipped: int = 0
    deadline_misses: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    # the Ctrl-C (KeyboardInterrupt) or SIGTERM (Terminated) that ended the stream early, if one did
    interruption: KeyboardInterrupt | None = field(default=None, repr=False)
    # the last LATENCY_WINDOW frames only: a stream may run for days
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)
    stage_ms: dict = field(default_factory=lambda: {"decode": 0.0, "synthesize": 0.0, "encode": 0.0}, repr=False)

    @property
    def sustained_fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "stage_ms", "interruption")}
        data["sustained_fps"] = self.sustained_fps
        if self.latencies_ms:
            lat = summarize(list(self.latencies_ms))
            data["latency_ms"] = {"p50": lat.p50, "p99": lat.p99, "mean": lat.mean}
        busy = {stage: ms / max(1, self.frames_in if stage == "decode" else self.frames_out)
                for stage, ms in self.stage_ms.items()}
        data["stage_ms_per_frame"] = busy
        return data

    def line(self) -> str:
        s = self.summary()
        lat = s.get("latency_ms", {})
        return (f"{self.frames_in} frames in, {self.frames_out} out, {self.dropped} dropped, {self.skipped} skipped "
                f"(identical), {self.deadline_misses} deadline misses; {self.sustained_fps:.2f} fps sustained; "
                f"latency p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms; per frame: "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in s["stage_ms_per_frame"].items()))


@dataclass
class _Item:
    index: int
    labels: object  # uint8 [H,W] ids, or a device array
    arrived: float
    name: str | None = None  # the label file's name, where the source has names: folder sinks keep it
    image: np.ndarray | None = None


class _Stop(Exception):
    pass


def run_stream(synth: Synthesizer, source, sink, options: StreamOptions | None = None,
               progress: Callable[[StreamStats], None] | None = None) -> StreamStats:
    """Pump every map of ``source`` through ``synth`` into ``sink``; returns the statistics."""
    stream = _Stream(synth, source, sink, options or StreamOptions(), progress)
    return stream.run()


class _Stream:
    def __init__(self, synth, source, sink, options, progress) -> None:
        self.synth, self.source, self.sink, self.options, self.progress = synth, source, sink, options, progress
        self.stats = StreamStats()
        self.stop = threading.Event()  # everything stops now: Ctrl-C, or the last stage failed
        self.stop_producing = threading.Event()  # a later stage failed: earlier stages stop
        self.errors: list[tuple[str, BaseException]] = []
        self.to_synth: queue.Queue = queue.Queue(options.queue_size)
        self.to_encode: queue.Queue = queue.Queue(options.queue_size)
        self.lock = threading.Lock()
        self.started = time.perf_counter()

    def run(self) -> StreamStats:
        started = self.started = time.perf_counter()
        stages = (("decode", self._decode, self.to_synth), ("synthesize", self._synthesize, self.to_encode),
                  ("encode", self._encode, None))
        threads = [threading.Thread(target=self._guard, args=stage, name=f"crn-{stage[0]}", daemon=True)
                   for stage in stages]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)  # short joins keep Ctrl-C responsive
        except KeyboardInterrupt as interrupt:
            self.stats.interrupted, self.stats.interruption = True, interrupt
            self.stop.set()
            self._source_stops_waiting()
            # Only the encoder touches the sink: once it has let go, the sink can be closed. The other
            # stages may be inside a long call (a forward pass); they are daemons and are not waited for.
            threads[2].join(5)
        finally:
            self.stats.seconds = time.perf_counter() - started
            self.sink.close()
        if self.errors:
            stage, error = self.errors[0]
            message = str(error) if isinstance(error, CrnError) else f"{type(error).__name__}: {error}"
            failure = CrnError(f"the {stage} stage failed after {self.stats.frames_out} frames: {message}")
            failure.exit_code = getattr(error, "exit_code", failure.exit_code)  # bad input stays a usage error (2)
            raise failure from error
        return self.stats

    def _guard(self, stage: str, fn, downstream: queue.Queue | None) -> None:
        """Run a stage; if it fails, stop the stages before it and let the ones after it finish
        what they already have (so the output holds every frame made before the failure)."""
        try:
            fn()
        except _Stop:
            pass
        except BaseException as error:  # reported by run(), never swallowed
            self.errors.append((stage, error))
            self.stop_producing.set()
            self._source_stops_waiting()
            if downstream is None:
                self.stop.set()
            else:
                try:
                    self._put(downstream, _END)
                except _Stop:
                    pass

    def _source_stops_waiting(self) -> None:
        """A source fed from elsewhere (a simulator's sensor callback) may be waiting for a frame that never comes:
        where it can (``stop_waiting``), it ends its iteration, so that the decode stage ends too."""
        stop_waiting = getattr(self.source, "stop_waiting", None)
        if stop_waiting is not None:
            stop_waiting()

    # queue helpers that give up when the stream is stopping ------------------------------------
    def _put(self, q: queue.Queue, item, producing: bool = False) -> None:
        while True:
            if self.stop.is_set() or (producing and self.stop_producing.is_set()):
                raise _Stop
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue):
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue

    # stages ------------------------------------------------------------------------------------
    def _decode(self) -> None:
        iterator = iter(self.source)
        index = 0
        while not self.stop_producing.is_set():
            t0 = time.perf_counter()
            labels = next(iterator, _END)
            if labels is _END:
                break
            self.stats.stage_ms["decode"] += (time.perf_counter() - t0) * 1000
            self.stats.frames_in += 1
            name, labels = labels if isinstance(labels, Named) else (None, labels)
            if not getattr(self.source, "yields_label_ids", False):
                labels = self._label_ids(labels)
            item = _Item(index, labels, time.perf_counter(), name)
            index += 1
            if self.options.policy == "live":
                self._put_dropping_oldest(item)
            else:
                self._put(self.to_synth, item, producing=True)
        self._put(self.to_synth, _END)

    def _label_ids(self, labels):
        """A source's own maps as class ids of the label set [H,W] (device maps go to the engine as they are)."""
        if _on_device(labels):
            if self.synth.label_map is not None:
                raise UsageError(f"maps on the GPU go to the engine as they are, so the '{self.synth.label_map.name}' "
                                 "label mapping cannot read them: map them into the label set on the device")
            return labels
        if isinstance(labels, LabelFrame):
            return LabelFrame(self.synth.label_ids(labels.ids), labels.instances)
        return self.synth.label_ids(labels)

    def _put_dropping_oldest(self, item: _Item) -> None:
        with self.lock:
            while True:
                try:
                    self.to_synth.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self.to_synth.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass

    def _synthesize(self) -> None:
        previous_labels, previous_image = None, None
        while (item := self._get(self.to_synth)) is not _END:
            t0 = time.perf_counter()
            if self.options.skip_identical and previous_image is not None and _same(item.labels, previous_labels):
                item.image = previous_image
                self.stats.skipped += 1
            else:
                item.image = self._one(item.labels)
                previous_labels = _host_copy(item.labels)
                previous_image = item.image
            self.stats.stage_ms["synthesize"] += (time.perf_counter() - t0) * 1000
            self._put(self.to_encode, item)
        self._put(self.to_encode, _END)

    def _one(self, labels) -> np.ndarray:
        if _on_device(labels):  # a segmentation model's output on the GPU: engine shape, no host round trip
            return self.synth.submit_device(labels).result()[0]
        ids, instances = (labels.ids, labels.instances) if isinstance(labels, LabelFrame) else (labels, None)
        if self.options.resize == "letterbox":
            return self._letterboxed(ids, instances)
        return self.synth(ids, instances=instances, output_size=self.options.output_size, mapped=True)

    def _letterboxed(self, labels: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
        (eh, ew), (h, w) = self.synth.resolution, labels.shape
        scale = min(eh / h, ew / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (eh - nh) // 2, (ew - nw) // 2
        rule = self.synth.label_resize
        canvas = np.full((eh, ew), VOID_ID, np.uint8)
        canvas[top : top + nh, left : left + nw] = resize_labels(labels, (nh, nw), rule)
        if instances is not None:  # the padding is one more instance
            padded = np.full((eh, ew), -1, np.int32)
            padded[top : top + nh, left : left + nw] = resize_labels(instances, (nh, nw), rule)
            instances = padded
        image = self.synth(canvas, instances=instances, output_size=OutputSize.ENGINE, mapped=True)
        if self.options.output_size is OutputSize.ENGINE:
            return image
        (oh, ow), target = self.synth.output_resolution, self.synth.picture_size((h, w))
        rows = slice(round(top * oh / eh), round((top + nh) * oh / eh))  # the picture may be larger (PosGen)
        cols = slice(round(left * ow / ew), round((left + nw) * ow / ew))
        crop = image[..., rows, cols, :]
        return resize_image(crop, target) if crop.ndim == 3 else np.stack([resize_image(c, target) for c in crop])

    def _encode(self) -> None:
        while (item := self._get(self.to_encode)) is not _END:
            t0 = time.perf_counter()
            frame = self._compose(item)
            if item.name is None:  # sinks take (rgb) or, for sources with names, (rgb, name)
                self.sink.write(frame)
            else:
                self.sink.write(frame, item.name)
            done = time.perf_counter()
            self.stats.stage_ms["encode"] += (done - t0) * 1000
            self.stats.frames_out += 1
            self.stats.latencies_ms.append((done - item.arrived) * 1000)
            if self.options.policy == "live" and done - item.arrived > 1.0 / self.options.fps:
                self.stats.deadline_misses += 1
            if self.progress is not None:
                self.progress(self.stats)

    def _compose(self, item: _Item) -> np.ndarray:
        image = item.image if item.image.ndim == 3 else item.image[0]  # k-image models: the first picture
        ids = item.labels.ids if isinstance(item.labels, LabelFrame) else item.labels
        if self.options.side_by_side and isinstance(ids, np.ndarray):
            colors = self.synth.label_set.ids_to_colors(ids)
            image = np.concatenate([resize_labels_rgb(colors, image.shape[:2]), image], axis=1)
        if self.options.overlay_fps:
            image = np.ascontiguousarray(image)
            fps = self.stats.frames_out / max(1e-9, time.perf_counter() - self.started)
            cv2.putText(image, f"{fps:.1f} fps", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2,
                        cv2.LINE_AA)
        return image


def _on_device(labels) -> bool:
    return not isinstance(labels, np.ndarray) and (hasattr(labels, "__cuda_array_interface__")
                                                   or hasattr(labels, "__dlpack__"))


def _same(a, b) -> bool:
    if isinstance(a, LabelFrame) and isinstance(b, LabelFrame):
        return _same(a.ids, b.ids) and _same(a.instances, b.instances)
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)


def _host_copy(labels):
    """A copy to compare the next map with (host maps only; device maps are never skipped)."""
    if isinstance(labels, LabelFrame):
        return LabelFrame(labels.ids.copy(), labels.instances.copy())
    return labels.copy() if isinstance(labels, np.ndarray) else None


def resize_labels_rgb(colors: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A colour label picture at another size, nearest-neighbour (colours stay palette colours)."""
    if colors.shape[:2] == tuple(size):
        return colors
    return cv2.resize(colors, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
