"""crn-build: engines from exported ONNX files: TensorRT on the GPU that will run them, TensorRT-RTX
on any machine for RTX-class GPUs, or OpenVINO for CPUs (FP32, or BF16 where the CPU has it)."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

from ..errors import UsageError
from ..targets import RTX, TARGETS, parse_compute_capabilities, target
from ._main import log, parse_or_exit, run_command

PROG = "crn-build"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5GiB' -> bytes."""
    match = _SIZE.match(text.strip())
    if not match:
        raise UsageError(f"size '{text}' is not a number with an optional K/M/G/T suffix (for example 8G)")
    return int(float(match.group(1)) * 1024 ** "_KMGT".index(match.group(2).upper() or "_"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("onnx", nargs="+", type=Path, help="exported .onnx files (their .json manifests beside them)")
    add_builder_options(p)
    g = p.add_argument_group("CPU engines (--target openvino)")
    g.add_argument("--precision", dest="engine_precision", choices=TARGETS["openvino"].precisions,
                   help="what the engine computes in (default: bf16 where this CPU has it, else fp32); built from the "
                        "FP32 artifact, checked against the reference on the export's label maps")
    g.add_argument("--min-psnr", dest="engine_min_psnr", type=float,
                   help="BF16 floor: the least PSNR against the reference, in dB (default 55)")
    g.add_argument("--max-abs", dest="engine_max_abs", type=float,
                   help="BF16 floor: the most any value may differ from the reference, in levels (default 4)")
    add_triton_options(p)
    return p


def add_triton_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Triton Inference Server")
    g.add_argument("--triton", type=Path, metavar="REPO",
                   help="also write a Triton model repository: a model per artifact (tensorrt_plan for TensorRT "
                        "engines, Triton's openvino backend for OpenVINO ones, onnxruntime_onnx for ONNX), "
                        "config.pbtxt and the manifest")
    g.add_argument("--triton-instances", type=int, default=1, metavar="N",
                   help="model instances per GPU in the Triton configs (default 1)")


def write_triton(args, manifests, kinds: tuple[str, ...], prog: str = PROG) -> None:
    """The Triton models of ``manifests`` for each kind asked for that it has: ``onnxruntime`` (its ONNX) always,
    an engine's kind (``tensorrt``, ``openvino``) where it has that engine. Triton's TensorRT backend loads
    TensorRT plans only: an artifact whose only engines Triton has no backend for (TensorRT-RTX's) gets its ONNX
    Runtime model."""
    if not args.triton:
        return
    from ..artifacts.triton import write_model

    for manifest in manifests:
        engines = manifest.engine_records()
        served = [t.triton for t in engines if t.triton]
        wanted = [k for k in kinds if k == "onnxruntime" or k in served]
        if engines and not served:
            log(f"{prog}: Triton's TensorRT backend does not load {', '.join(t.runtime for t in engines)} engines; "
                f"{manifest.artifact} gets an ONNX Runtime model")
            wanted = list(dict.fromkeys([*wanted, "onnxruntime"]))
        for kind in wanted:
            log(f"{prog}: Triton model {write_model(args.triton, manifest, kind, args.triton_instances)}")


def add_builder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine builder (TensorRT, TensorRT-RTX or OpenVINO)")
    g.add_argument("--target", choices=tuple(TARGETS),
                   help="tensorrt: TensorRT, built on the GPU that runs it (Hopper, datacenter Blackwell, Jetson...); "
                        "rtx: TensorRT-RTX, built on any machine for GeForce RTX / RTX PRO / A100-class GPUs; "
                        "openvino: OpenVINO, for CPUs, built from FP32 artifacts on a CPU of the kind that runs it "
                        "(default: tensorrt where TensorRT and a GPU are here, else rtx where TensorRT-RTX is)")
    g.add_argument("--compute-capability", metavar="LIST",
                   help="rtx: the GPUs the engine serves, e.g. 86,89 or 75,80,86,89,120 (default: TensorRT-RTX's, "
                        "8.0, 8.6, 8.9 and 12.x)")
    g.add_argument("--threads", type=int,
                   help="openvino: inference threads to compile and check the engine with (default: OpenVINO's choice)")
    g.add_argument("--workspace", help="workspace memory limit, e.g. 8G (default: TensorRT's, the GPU's memory)")
    g.add_argument("--opt-level", type=int, help="builder optimization level 0..5 (default 3)")
    g.add_argument("--timing-cache", type=Path, help="timing cache file (default: timing.cache in the engines folder)")
    g.add_argument("--detailed-profiling", action="store_true", help="per-layer detail for the engine inspector")
    g.add_argument("--tf32", action="store_true",
                   help="let FP32 convolutions (fp32 engines, FP32 islands of fp16 ones) use TF32: faster, rounder")
    g.add_argument("--verbose", action="store_true", help="print the builder's log (default: its warnings in one line)")


# Builder options that apply to one kind of target only: TensorRT's (GPU engines) and OpenVINO's (CPU engines).
GPU_BUILDER_OPTIONS = {"workspace": "--workspace", "opt_level": "--opt-level", "timing_cache": "--timing-cache",
                       "detailed_profiling": "--detailed-profiling", "tf32": "--tf32",
                       "compute_capability": "--compute-capability"}
CPU_BUILDER_OPTIONS = {"engine_precision": "--precision", "threads": "--threads", "engine_min_psnr": "--min-psnr",
                       "engine_max_abs": "--max-abs"}


def check_builder_options(args) -> None:
    """The builder options' own checks, before anything runs (crn-build and crn-export share them)."""
    if args.workspace:
        parse_size(args.workspace)
    if args.opt_level is not None and not 0 <= args.opt_level <= 5:
        raise UsageError(f"--opt-level must be 0..5, got {args.opt_level}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    _check_options_fit_the_target(args)
    args.compute_capabilities = parse_compute_capabilities(args.compute_capability) if args.compute_capability \
        else ()
    if args.compute_capabilities and args.target not in (None, RTX.name):
        raise UsageError("--compute-capability chooses TensorRT-RTX's GPUs (--target rtx); a TensorRT engine runs on "
                         "the GPU that builds it")
    if args.triton_instances < 1:
        raise UsageError(f"--triton-instances must be at least 1, got {args.triton_instances}")


def _check_options_fit_the_target(args) -> None:
    """A GPU builder's option with a CPU target (or the reverse) is refused, naming the target it belongs to."""
    cpu_target = args.target is not None and target(args.target).device == "cpu"
    misplaced, belongs = (GPU_BUILDER_OPTIONS, "TensorRT and TensorRT-RTX builds") if cpu_target else \
        (CPU_BUILDER_OPTIONS, "OpenVINO CPU engines (--target openvino)")
    given = [flag for dest, flag in misplaced.items() if getattr(args, dest, None) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} applies to {belongs}, not to --target {args.target or 'default'}; "
                         f"drop {'it' if len(given) == 1 else 'them'}, or choose the target it belongs to")


def build_target(args):
    """The --target asked for, if its builder is here; without --target, the default one; else one line why not
    (given --compute-capability, TensorRT-RTX)."""
    from ..backends import engine_module
    from ..backends.tensorrt import default_build_target

    if args.target is None and not args.compute_capabilities:
        return default_build_target()
    chosen = target(args.target or RTX.name)
    reason = engine_module(chosen).engines_unavailable_reason(chosen, to_build=True)
    if reason is not None:
        raise UsageError(f"cannot build {chosen.runtime} engines here: {reason}")
    return chosen


def builder_options(args, chosen):
    """The options of ``chosen``'s builder: OpenVINO's for CPU engines, TensorRT's otherwise."""
    if chosen.device == "cpu":
        from ..artifacts.openvino_build import OpenVINOBuildOptions
        from ..precisions import precision

        wanted = getattr(args, "engine_precision", None)
        return OpenVINOBuildOptions(precision(wanted) if wanted else None, args.threads, *_engine_floor(args), chosen,
                                    args.verbose)
    from ..artifacts.engine import BuildOptions

    return BuildOptions(parse_size(args.workspace) if args.workspace else None,
                        3 if args.opt_level is None else args.opt_level, args.timing_cache, args.detailed_profiling,
                        args.tf32, chosen, args.compute_capabilities, args.verbose)


def _engine_floor(args) -> tuple[float | None, float | None]:
    """A BF16 engine's floor: crn-build's --min-psnr/--max-abs, or crn-export's (the same flags as FP16's)."""
    if hasattr(args, "engine_min_psnr"):
        return args.engine_min_psnr, args.engine_max_abs
    return args.min_psnr, args.max_abs


def engine_builder(chosen):
    """The build function of ``chosen``'s builder module, as the targets' table names it."""
    return importlib.import_module(f"..artifacts.{chosen.builder}", __package__).build_engine


def _check(args) -> None:
    check_builder_options(args)
    for path in args.onnx:
        if path.suffix != ".onnx":
            raise UsageError(f"{path} is not an .onnx file; pass the files crn-export wrote")
        if not path.is_file():
            raise UsageError(f"{path} not found; pass the .onnx files crn-export wrote (with their .json beside them)")


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _build(args))


def _build(args) -> int:
    from ..manifest import Manifest, manifest_for

    manifests = [Manifest.read(manifest_for(path)) for path in args.onnx]  # all readable before any build
    try:
        chosen = build_target(args)
    except UsageError as e:
        if not args.triton or args.target or args.compute_capabilities:
            raise
        log(f"{PROG}: no engines built ({e}); the Triton repository gets ONNX Runtime models")
        write_triton(args, manifests, ("onnxruntime",))
        return 0
    options = builder_options(args, chosen)
    build_engine = engine_builder(chosen)
    for manifest in manifests:
        build_engine(manifest, options, log)
    write_triton(args, manifests, (chosen.triton or "onnxruntime",))
    log(f"{PROG}: {len(manifests)} {chosen.runtime} engine(s) built. Next: crn-bench {manifests[0].path.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
