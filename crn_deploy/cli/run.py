"""crn-run: stream label maps (folder, label video, synthetic scene) through an artifact into a video or folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..sizes import format_resolution
from ..errors import CrnError, UsageError
from ._main import log, parse_or_exit, require, run_command

PROG = "crn-run"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("artifact", type=Path, help="an exported .onnx or a built .engine (with its .json beside it)")
    p.add_argument("--input", required=True,
                   help="label video (.mp4/.avi/.mkv), folder or glob of label images, or synthetic[:HxW]")
    p.add_argument("--output", required=True, help="video file (.mp4/.avi/.mkv) or a folder for PNG frames")
    p.add_argument("--side-by-side", action="store_true", help="write labels | synthesized")
    p.add_argument("--policy", choices=("lossless", "live"), default="lossless",
                   help="lossless: every frame in order; live: a deadline per frame, drop the oldest when behind")
    p.add_argument("--fps", type=float, help="frame rate: the live deadline and the output video's rate")
    p.add_argument("--frames", type=int, default=100, help="frames of the synthetic scene (default 100)")
    p.add_argument("--resize", choices=("stretch", "letterbox"), default="stretch",
                   help="maps of another aspect ratio: stretch, or letterbox with void padding")
    p.add_argument("--output-size", choices=("input", "engine"), default="input", help="picture size (default input)")
    p.add_argument("--strict-labels", "--strict-colors", dest="strict_colors", action="store_true",
                   help="refuse label maps with colours outside the palette or ids past the label set (default: "
                        "they light nothing, with a warning)")
    p.add_argument("--label-map", metavar="NAME|FILE",
                   help="read the label maps in another label space: carla (CARLA 0.9.14+ raw tag frames), "
                        "carla-palette (its CityScapesPalette frames), carla-0.9.13, carla-0.9.13-palette, or a "
                        ".toml/.json mapping file naming the artifact's classes (docs/streaming.md)")
    p.add_argument("--no-skip-identical", action="store_true", help="synthesize repeated maps again")
    p.add_argument("--overlay-fps", action="store_true", help="draw the sustained frame rate on each frame")
    p.add_argument("--device", default="auto",
                   help="ONNX Runtime device for .onnx (auto, cpu, cuda, tensorrt); with --reference: cpu or cuda")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device number for engines and GPU providers (default 0)")
    p.add_argument("--reference", action="store_true",
                   help="run the PyTorch reference model behind the artifact instead (needs torch)")
    p.add_argument("--checkpoint", type=Path, help="with --reference: the source checkpoint, if it moved since export")
    g = p.add_argument_group("Ray cluster (label images, NumPy shards or Parquet into pictures or Parquet)")
    g.add_argument("--ray", nargs="?", const="local", metavar="auto|ADDRESS",
                   help="synthesize on Ray: a local instance (no value), the running cluster (auto) or ADDRESS")
    g.add_argument("--workers", type=int, default=1, help="with --ray: actors, each opening the artifact once")
    g.add_argument("--gpus-per-worker", type=float, help="with --ray: GPUs per actor (default 1 where the cluster "
                                                           "has GPUs, else 0: CPU actors)")
    g.add_argument("--cpus-per-worker", type=float,
                   help="with --ray: CPUs each CPU actor reserves (default: the cluster's free CPUs shared evenly, "
                        "whole, as many as a node holds)")
    g.add_argument("--overwrite", action="store_true", help="with --ray: repaint pictures already written")
    g.add_argument("--threads", type=int,
                   help="with --ray: threads per map a CPU worker paints, on ONNX Runtime or an OpenVINO engine "
                        "(default: 1 for maps up to 256x512, painted one per CPU at once; else all its CPUs)")
    p.add_argument("--style-seed", type=int, default=0,
                   help="for models with a style input (SPADE with a VAE): the seed of the style every frame "
                        "gets (default 0)")
    return p


def _check(args) -> None:
    from ..data.label_mapping import load_label_map
    from ..runtime.stream import StreamOptions

    if args.label_map is not None:
        args.label_map = load_label_map(args.label_map)  # a file that is no mapping is a usage error, before loading
    if args.frames < 1 or (args.fps is not None and args.fps <= 0):
        raise UsageError("--frames and --fps must be positive")
    if args.gpu < 0:
        raise UsageError(f"--gpu must be a CUDA device number >= 0, got {args.gpu}")
    if args.ray is None and (args.workers != 1 or args.gpus_per_worker is not None or args.overwrite or args.threads
                             or args.cpus_per_worker is not None):
        raise UsageError("--workers, --gpus-per-worker, --cpus-per-worker, --overwrite and --threads apply with --ray")
    if args.ray is not None:
        _check_ray(args)
    args.options = StreamOptions(policy=args.policy, fps=args.fps, resize=args.resize, output_size=args.output_size,
                                 side_by_side=args.side_by_side, skip_identical=not args.no_skip_identical,
                                 overlay_fps=args.overlay_fps)


def _check_ray(args) -> None:
    if args.workers < 1 or (args.gpus_per_worker is not None and args.gpus_per_worker < 0):
        raise UsageError("--workers must be at least 1 and --gpus-per-worker at least 0")
    if args.cpus_per_worker is not None and args.cpus_per_worker < 1:
        raise UsageError(f"--cpus-per-worker must be at least 1, got {args.cpus_per_worker:g}")
    if args.input.startswith("synthetic") or Path(args.input).suffix.lower() in (".mp4", ".avi", ".mkv", ".mov"):
        raise UsageError("--ray synthesizes folders or globs of label images or NumPy shards, or Parquet; give "
                         "--input DIR, 'DIR/**/*.png', 'runs/*.npy' or data.parquet")
    if Path(str(args.output).rstrip("/")).suffix not in ("", ".parquet"):
        raise UsageError(f"--ray writes a folder (or object-store prefix) of pictures or a .parquet dataset, not "
                         f"{args.output}")
    if args.reference or args.side_by_side or args.resize != "stretch" or args.output_size != "input" \
            or args.style_seed:
        raise UsageError("--ray paints each map as plain crn-run does by default: drop --reference, --side-by-side, "
                         "--resize, --output-size and --style-seed")


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    if args.ray is not None:  # in the main thread: an interrupt stops the run's writers and ends its record
        return run_command(PROG, lambda: _run_ray(args), handles_interrupts=True)
    return run_command(PROG, lambda: _run(args), handles_interrupts=True)


def _run_ray(args) -> int:
    require(PROG, ("ray",), "ray", why=" --ray")
    from ..scale.batch import BatchOptions, synthesize_files, uses_ray_data
    from ..scale.cluster import quiet_ray

    options = BatchOptions(workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                           address=None if args.ray == "local" else args.ray, overwrite=args.overwrite,
                           threads=args.threads, cpus_per_worker=args.cpus_per_worker,
                           strict_colors=args.strict_colors, label_map=args.label_map)
    with quiet_ray("ray.data" if uses_ray_data(args.input, args.output) else "ray"):
        summary = synthesize_files(args.artifact, args.input, str(args.output), options,
                                   lambda line: log(f"{PROG}: {line}"))
    log(f"{PROG}: {summary.line()}")
    log(f"{PROG}: wrote {args.output} (record: {summary.record})")
    if summary.unreadable:
        raise CrnError(f"{len(summary.unreadable)} of {summary.inputs} label files could not be read and have no "
                       f"picture (each named above and in the record); every other picture was written")
    return 0


class _Progress:
    """One status line: redrawn in place on a terminal, every few seconds otherwise."""

    def __init__(self, total: int | None) -> None:
        self.total, self.tty, self.last = total, sys.stderr.isatty(), 0.0

    def __call__(self, stats) -> None:
        now = time.perf_counter()
        if now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        of = f"/{self.total}" if self.total else ""
        fps = stats.frames_out / max(1e-9, now - self.start)
        line = f"{PROG}: {stats.frames_out}{of} frames, {fps:.1f} fps, {stats.dropped} dropped, {stats.skipped} skipped"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def begin(self) -> None:
        self.start = self.last = time.perf_counter()


def _open(args):
    from ..measure.reference import load_reference
    from ..runtime import load

    if args.reference:
        require(PROG, ("torch",), why=" --reference")
        return load_reference(args.artifact, device="cpu" if args.device == "auto" else args.device,
                              checkpoint=args.checkpoint, style_seed=args.style_seed, label_map=args.label_map)
    return load(args.artifact, device=args.device, gpu=args.gpu, style_seed=args.style_seed,  # device: .onnx only
                label_map=args.label_map)


def _run(args) -> int:
    from ..data.streams import check_no_overwrite, open_sink, open_source
    from ..runtime import artifact_sha256
    from ..runtime.stream import run_stream

    synth = _open(args)
    synth.unknown_colors.notify = lambda notice: log(f"{PROG}: warning: {notice}")  # as it happens, once
    with synth:
        if synth.manifest.sizes.decoupled:
            log(f"{PROG}: {args.artifact.name} takes {format_resolution(synth.resolution)} label maps and paints "
                f"{format_resolution(synth.output_resolution)} pictures (--output-size input scales them alike)")
        source = open_source(args.input, synth.label_set, resolution=synth.resolution, frames=args.frames,
                             fps=args.fps, strict_colors=args.strict_colors, unknown=synth.unknown_colors,
                             on_unreadable=lambda line: log(f"{PROG}: warning: {line}"), label_map=synth.label_map)
        fps = args.fps or getattr(source, "fps", None) or 10.0
        sink = open_sink(args.output, fps, artifact_sha256=None if args.reference else artifact_sha256(args.artifact))
        try:
            check_no_overwrite(source, sink)
        except BaseException:
            sink.close()  # removes the output folder it created
            raise
        progress = _Progress(len(source) if hasattr(source, "__len__") else None)
        progress.begin()
        stats = run_stream(synth, source, sink, args.options, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    log(f"{PROG}: {stats.line()}")
    for line in synth.unknown_colors.summaries(synth.label_set.name, unwarned_only=True):  # each said once
        log(f"{PROG}: warning: {line}")
    log(f"{PROG}: wrote {args.output}" + (" (interrupted: what was written is complete)" if stats.interrupted else ""))
    if stats.interruption is not None:
        raise stats.interruption  # ends the process with 130 / 143
    unreadable = getattr(source, "unreadable", [])
    if unreadable:
        raise CrnError(f"{len(unreadable)} of {len(source)} label files could not be read and have no picture (each "
                       f"named above, the first: {unreadable[0]}); every other picture was written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
