"""crn-export: a checkpoint of any family (or a preset with random weights) -> validated ONNX per resolution and
precision, and engines where a builder is here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sizes import Sizes, parse_resolution
from ..errors import UsageError
from ..families import FAMILIES, config_fields_from_options, family, family_of_config, find_preset
from ..precisions import FP16
from ..precisions import NAMES as PRECISIONS
from ..precisions import precision
from ._main import log, parse_or_exit, require, run_command
from ..targets import target
from .build import add_builder_options, add_triton_options, build_target, builder_options, check_builder_options, \
    engine_builder, write_triton

PROG = "crn-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip(), fromfile_prefix_chars="@",
                                epilog="@FILE reads arguments from FILE, one per line: see export/*.args")
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help=".pt/.pth/.safetensors checkpoint: a CRN, or pix2pixHD's or SPADE's latest_net_G.pth")
    p.add_argument("--family", choices=tuple(FAMILIES),
                   help="model family (default: the preset's, the file's, or recognised from its keys)")
    p.add_argument("--preset", help="architecture preset (with --random-weights, or to check a checkpoint against)")
    p.add_argument("--no-instance", action="store_true",
                   help="pix2pixHD trained with --no_instance: no instance-edge input channel (the official "
                        "default has one; the weights cannot tell)")
    p.add_argument("--opt", type=Path, metavar="OPT_TXT",
                   help="the training run's opt.txt (pix2pixHD, SPADE), for what the weights do not record; "
                        "default: the opt.txt beside the checkpoint, where there is one")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a training option by its official name (e.g. num_upsampling_layers=more, label_nc=35, "
                        "no_instance=True), repeatable; over --opt, and over --preset's values")
    p.add_argument("--random-weights", action="store_true", help="seeded random weights: benchmark before training")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    p.add_argument("--res", action="append", default=[], metavar="HxW",
                   help="output resolution, repeatable (default: the model's native resolution)")
    p.add_argument("--out-res", action="append", default=[], metavar="HxW",
                   help="the picture's size, one per --res, where it differs from the label map's (PosGen's "
                        "pixel-wise head: e.g. --res 256x512 --out-res 512x1024)")
    p.add_argument("--precision", action="append", default=[], choices=PRECISIONS, help="repeatable (default fp16)")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size of the artifacts (default 1)")
    p.add_argument("--out", type=Path, default=Path("engines"), help="output folder (default engines/)")
    p.add_argument("--name", help="artifact name prefix (default: checkpoint stem, or <preset>-seed<N>)")
    p.add_argument("--samples", type=int, default=2, help="synthetic layouts for the parity check (default 2)")
    p.add_argument("--min-psnr", type=float, default=FP16.min_psnr_db,
                   help=f"FP16 floor: the least PSNR against PyTorch FP32, in dB (default {FP16.min_psnr_db:g})")
    p.add_argument("--max-abs", type=float, default=FP16.max_levels,
                   help=f"FP16 floor: the most any value may differ from PyTorch FP32, in levels "
                        f"(default {FP16.max_levels:g})")
    p.add_argument("--no-engine", action="store_true",
                   help="export ONNX only, even where an engine builder (TensorRT and a GPU, or TensorRT-RTX) is here")
    add_builder_options(p)
    add_triton_options(p)
    return p


def _check(args) -> None:
    args.resolutions = [parse_resolution(r) for r in args.res]
    args.output_resolutions = [parse_resolution(r) for r in args.out_res]
    if args.output_resolutions and len(args.output_resolutions) != max(1, len(args.resolutions)):
        raise UsageError(f"give one --out-res per --res ({len(args.resolutions)} --res, "
                         f"{len(args.output_resolutions)} --out-res)")
    args.precisions = list(dict.fromkeys(precision(p) for p in args.precision or ["fp16"]))
    if args.random_weights == bool(args.checkpoint):
        raise UsageError("give a CHECKPOINT, or --preset NAME --random-weights (not both, not neither)")
    if args.random_weights and not args.preset:
        raise UsageError("--random-weights needs --preset NAME to say which architecture")
    if args.preset:
        preset_family, _ = find_preset(args.preset)
        if args.family and args.family != preset_family.name:
            raise UsageError(f"preset {args.preset} is a {preset_family.name} model, not {args.family}")
        if args.no_instance and not preset_family.takes_instances(preset_family.presets[args.preset][0]):
            raise UsageError(f"--no-instance applies to models with an instance input; {args.preset} has none")
    args.options = _options(args.option)
    if args.batch < 1 or args.samples < 1:
        raise UsageError("--batch and --samples must be at least 1")
    check_builder_options(args)
    builds_from = target(args.target).artifacts if args.target else None
    if builds_from and not set(builds_from) & {p.name for p in args.precisions}:
        raise UsageError(f"--target {args.target} builds its engines from {' or '.join(builds_from)} artifacts: add "
                         f"--precision {builds_from[0]}")


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--option takes KEY=VALUE (an official training option), got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _export(args))


def _export(args) -> int:
    require(PROG, ("torch", "onnx", "onnxruntime"), "export,ort")
    from ..artifacts.exporter import ExportOptions, export_artifacts
    from ..models.checkpoint import load_checkpoint, random_model
    from ..models.state import read_opt_file

    chosen = _engine_target(args)  # an explicit --target that cannot build here stops before the export
    options = {**(read_opt_file(args.opt) if args.opt else {}), **args.options,
               **({"no_instance": "True"} if args.no_instance else {})}
    config = find_preset(args.preset)[1] if args.preset else None
    if config is not None and options:
        config = _with_options(config, options)
    if args.random_weights:
        _sizes(args, family_of_config(config), config)  # before hundreds of millions of weights are drawn
        source = random_model(config, args.seed, args.preset)
        name = args.name or f"{args.preset}-seed{args.seed}"
    else:
        source = load_checkpoint(args.checkpoint, config, args.family, options=options or None,
                                 options_file=args.opt)
        name = args.name or args.checkpoint.stem
        if "options_file" in source.source:
            log(f"{PROG}: the training run's options from {source.source['options_file']}")
    fam, config = family(source.family), source.config
    sizes = _sizes(args, fam, config)
    log(f"{PROG}: {name}: {fam.describe(config)} -> {', '.join(map(str, sizes))} x "
        f"{', '.join(p.name for p in args.precisions)}")
    options = ExportOptions(sizes, args.precisions, args.out, name, args.batch, args.samples,
                            min_psnr_fp16=args.min_psnr, max_abs_fp16=args.max_abs)
    manifests = export_artifacts(source, options, log)
    _build_engines(args, manifests, chosen)
    write_triton(args, manifests, ("onnxruntime", *([chosen.triton] if chosen and chosen.triton else [])), PROG)
    log(f"{PROG}: {len(manifests)} artifact(s) in {args.out}/. Next: crn-bench {args.out}")
    return 0


def _sizes(args, fam, config) -> list[Sizes]:
    """The sizes asked for (the family's native one by default), each checked against the model: passed on as
    they are."""
    resolutions = args.resolutions or [fam.native_resolution(config)]
    sizes = [Sizes(r, o) for r, o in zip(resolutions, args.output_resolutions or resolutions, strict=True)]
    for size in sizes:
        fam.check_sizes(size, config)
    return sizes


def _with_options(config, options: dict[str, str]):
    """A preset's config with the given official options set over it."""
    return config.with_options(config_fields_from_options(type(config), options, "--opt/--option"))


def _engine_target(args):
    """The target engines are built for, or None (--no-engine, or no builder here and none was asked for)."""
    if args.no_engine:
        return None
    if args.target is None and not args.compute_capabilities:
        try:
            return build_target(args)
        except UsageError as e:
            args.no_engine_reason = str(e)
            return None
    return build_target(args)


def _build_engines(args, manifests, chosen) -> None:
    if chosen is None:
        reason = "--no-engine" if args.no_engine else args.no_engine_reason
        log(f"{PROG}: no engines built ({reason}); to build them later: crn-build {args.out}/*.onnx "
            "(TensorRT on the GPU machine, --target rtx anywhere, or --target openvino for CPUs)")
        return
    options = builder_options(args, chosen)
    build_engine = engine_builder(chosen)
    for manifest in manifests:
        if manifest.precision.name in chosen.artifacts:
            build_engine(manifest, options, log)
        else:
            log(f"{PROG}: {manifest.artifact}: no {chosen.runtime} engine ({chosen.runtime} engines are built from "
                f"the {' or '.join(chosen.artifacts)} artifact)")


if __name__ == "__main__":
    raise SystemExit(main())
