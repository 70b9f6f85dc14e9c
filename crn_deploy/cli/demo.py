"""crn-demo: the whole path on built-in defaults — export the demo model, synthesize a street scene, benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..families import family, find_preset
from ..precisions import FP16, FP32
from ..sizes import Sizes, format_resolution, parse_resolution
from ..errors import UsageError
from ._main import log, parse_or_exit, require, run_command

PROG = "crn-demo"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo-small-256p.safetensors"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--checkpoint", type=Path, default=DEMO_MODEL,
                   help="model to export (default: the shipped demo model, trained on the synthetic dataset)")
    p.add_argument("--preset", help="random weights: this architecture with seeded random weights instead of a "
                                    "trained model (pictures follow the layout but show nothing real; for speed "
                                    "tests); written beside, not over, the trained demo's files")
    p.add_argument("--res", help="resolution HxW (default: the model's native one)")
    p.add_argument("--seed", type=int, default=0, help="weights seed with --preset (default 0)")
    p.add_argument("--layout-seed", type=int, default=7, help="synthetic street layout seed (default 7)")
    p.add_argument("--engines", type=Path, default=Path("engines"), help="artifacts folder (default engines/)")
    p.add_argument("--out", type=Path, default=Path("out"), help="picture and report folder (default out/)")
    p.add_argument("--frames", type=int, default=30, help="frames of the side-by-side demo video (default 30)")
    return p


def _check(args) -> None:
    if args.preset:
        find_preset(args.preset)
    elif not args.checkpoint.is_file():
        raise UsageError(f"demo model {args.checkpoint} not found; pass --checkpoint PATH or --preset NAME")
    if args.frames < 1:
        raise UsageError("--frames must be at least 1")
    args.resolution = parse_resolution(args.res) if args.res else None


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _demo(args))


def _demo(args) -> int:
    require(PROG, ("torch", "onnx", "onnxruntime"), "export,ort")
    from ..models.checkpoint import load_checkpoint, random_model
    from ..artifacts.exporter import ExportOptions, export_artifacts
    from ..data.images import write_image
    from ..data.synthetic import scenes
    from ..measure.bench import BenchOptions, run_bench
    from ..measure.report import format_table, write_json
    from ..data.streams import SyntheticSource, VideoSink
    from ..runtime import load
    from ..runtime.stream import StreamOptions, run_stream

    if args.preset:
        config = find_preset(args.preset)[1]
        source, name = random_model(config, args.seed, args.preset), f"{args.preset}-seed{args.seed}"
    else:
        source, name = load_checkpoint(args.checkpoint), args.checkpoint.stem
    fam = family(source.family)
    args.resolution = args.resolution or fam.native_resolution(source.config)
    fam.check_resolution(args.resolution, source.config)
    log(f"{PROG}: 1/3 export {name} at {format_resolution(args.resolution)} (fp32, fp16) to {args.engines}/")
    manifests = export_artifacts(source, ExportOptions([Sizes.same(args.resolution)], [FP32, FP16], args.engines, name),
                                 log)

    log(f"{PROG}: 2/3 synthesize a street layout through the runtime, then stream the animated scene")
    ids, instances = scenes(source.label_set, 1, *args.resolution, seed=args.layout_seed)
    labels = ids[0, 0]
    fp16 = manifests[-1]
    with load(fp16.artifact_path) as synth:
        images = synth(labels, instances=None if instances is None else instances[0, 0])
    pictures = images if images.ndim == 4 else images[None]
    stem = f"demo-random-{name}" if args.preset else "demo"  # random weights never replace the trained demo's files
    picture = args.out / f"{stem}.png"
    write_image(picture, np.concatenate([synth.label_set.ids_to_colors(labels), *pictures], axis=1))
    log(f"{PROG}: wrote {picture} (label map | synthesized): {_what_it_shows(args, fam)}")
    with load(fp16.artifact_path) as synth:
        stats = run_stream(synth, SyntheticSource(*args.resolution, frames=args.frames,
                                                  label_set_name=source.label_set),
                           VideoSink(args.out / f"{stem}.mp4", fps=10), StreamOptions(side_by_side=True))
    log(f"{PROG}: wrote {args.out / f'{stem}.mp4'}: {stats.line()}")

    log(f"{PROG}: 3/3 benchmark them against the PyTorch reference")
    report = run_bench(manifests, BenchOptions(samples=2, warmup_s=0.5, iterations=5, duration_s=1.0), log)
    log(format_table(report))
    write_json(report, args.out / f"{stem}-bench.json" if args.preset else args.out / "bench.json")
    log(f"{PROG}: wrote {args.out / (f'{stem}-bench.json' if args.preset else 'bench.json')}. "
        "Next: crn-export YOUR_CHECKPOINT.pt --res 1024x2048")
    return 0


def _what_it_shows(args, fam) -> str:
    if args.preset:
        return "random weights: textures that merely follow the layout, for speed tests, not pictures"
    if args.checkpoint == DEMO_MODEL:
        return ("the shipped small CRN, trained for 16 CPU minutes on crn-deploy's own synthetic street scenes (no "
                "photographs can ship with the package): flat, soft streets that follow the layout. A CRN, "
                "pix2pixHD, SPADE or OASIS checkpoint trained on Cityscapes paints photographic streets: "
                "crn-export YOUR_CHECKPOINT.pt")
    return f"{fam.name} from {args.checkpoint.name}"


if __name__ == "__main__":
    raise SystemExit(main())
