"""CARLA's semantic camera through the runtime, live: a vehicle drives on autopilot with a semantic segmentation
camera on its roof; every frame the camera sends is painted as it arrives, and the labels | picture video is
written. The camera's callback only hands the frame over (``CarlaSource.push`` never blocks; when painting falls
behind, the oldest waiting frame is dropped and counted), so the simulator's tick never waits on the model.

    pip install carla==0.9.16        # CARLA's Python client, the server's version
    ./CarlaUE4.sh &                   # a CARLA server (0.9.14 or later; --label-map carla-0.9.13 for older ones)
    python examples/carla_loop.py engines/demo-small-256p-256x512-fp16.onnx --frames 300 --output carla.mp4

The raw frames (BGRA, the tag in the red channel) are read through the ``carla`` label mapping into the
artifact's label set (docs/streaming.md: CARLA's tags 20-28 and what they become).
"""

from __future__ import annotations

import argparse
import random
import sys

from crn_deploy import runtime
from crn_deploy.data.streams import CarlaSource, open_sink
from crn_deploy.errors import CrnError
from crn_deploy.runtime.stream import StreamOptions, run_stream

PROG = "carla_loop"


class PaintLoop:
    """The loop apart from CARLA: ``frames`` frames from a camera's callback (``on_image``) painted by the
    streaming loop into ``sink``, labels | picture."""

    def __init__(self, synth, sink, frames: int, *, queue_size: int = 2, fps: float | None = None) -> None:
        self.synth, self.sink, self.frames = synth, sink, frames
        self.source = CarlaSource(synth.label_set, synth.label_map or "carla", queue_size=queue_size, fps=fps,
                                  unknown=synth.unknown_colors)

    def on_image(self, image) -> None:
        """The camera's callback, on CARLA's thread: hand the frame over and return."""
        if self.source.pushed < self.frames:
            self.source.push(image)
        if self.source.pushed >= self.frames:
            self.source.close()

    def run(self, camera):
        camera.listen(self.on_image)
        try:
            return run_stream(self.synth, self.source, self.sink, StreamOptions(side_by_side=True))
        finally:
            camera.stop()


def import_carla():
    try:
        import carla
    except ImportError:
        raise SystemExit(f"{PROG}: needs CARLA's Python client: pip install carla==0.9.16 (the server's "
                         "version)") from None
    return carla


def connect(carla, host: str, port: int, timeout_s: float):
    client = carla.Client(host, port)
    client.set_timeout(timeout_s)
    try:
        return client.get_world()
    except RuntimeError as e:
        raise SystemExit(f"{PROG}: no CARLA server answers at {host}:{port} ({e}); start one (CarlaUE4.sh) or "
                         "give --host and --port") from None


def spawn_camera(carla, world, size: tuple[int, int], seed: int):
    """A vehicle on autopilot, and a semantic camera of ``size`` (H, W) on its roof."""
    library, rng = world.get_blueprint_library(), random.Random(seed)
    points = world.get_map().get_spawn_points()
    vehicle = None
    for point in rng.sample(points, len(points)):
        vehicle = world.try_spawn_actor(rng.choice(library.filter("vehicle.*")), point)
        if vehicle is not None:
            break
    if vehicle is None:
        raise SystemExit(f"{PROG}: every spawn point of the map is taken; free one or load another map")
    vehicle.set_autopilot(True)
    blueprint = library.find("sensor.camera.semantic_segmentation")
    blueprint.set_attribute("image_size_x", str(size[1]))
    blueprint.set_attribute("image_size_y", str(size[0]))
    camera = world.spawn_actor(blueprint, carla.Transform(carla.Location(x=1.5, z=2.4)), attach_to=vehicle)
    return vehicle, camera


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", help="an exported .onnx or a built .engine")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server (default 5)")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--fps", type=float, default=20.0, help="the video's frame rate (default 20)")
    p.add_argument("--output", default="carla.mp4", help="a video (.mp4, .avi, .mkv) or a folder of PNGs")
    p.add_argument("--label-map", default="carla", help="carla (CARLA 0.9.14+, default) or carla-0.9.13")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    carla = import_carla()
    world = connect(carla, args.host, args.port, args.timeout)
    try:
        synth = runtime.load(args.artifact, label_map=args.label_map)
    except CrnError as e:
        raise SystemExit(f"{PROG}: {e}") from None
    vehicle, camera = spawn_camera(carla, world, synth.resolution, args.seed)
    try:
        with synth:
            loop = PaintLoop(synth, open_sink(args.output, args.fps), args.frames, fps=args.fps)
            stats = loop.run(camera)
        print(f"{PROG}: {stats.line()}; {loop.source.dropped} frames dropped while painting was behind")
        print(f"{PROG}: wrote {args.output}")
    finally:
        camera.destroy()
        vehicle.destroy()


if __name__ == "__main__":
    sys.exit(main())
