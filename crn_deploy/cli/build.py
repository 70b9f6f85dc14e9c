"""crn-build: TensorRT engines from exported ONNX files, on the machine that will run them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..errors import UsageError
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
    add_triton_options(p)
    return p


def add_triton_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Triton Inference Server")
    g.add_argument("--triton", type=Path, metavar="REPO",
                   help="also write a Triton model repository: a model per artifact (tensorrt_plan for engines, "
                        "onnxruntime_onnx for ONNX), config.pbtxt and the manifest")
    g.add_argument("--triton-instances", type=int, default=1, metavar="N",
                   help="model instances per GPU in the Triton configs (default 1)")


def write_triton(args, manifests, kinds: tuple[str, ...], prog: str = PROG) -> None:
    """The Triton models of ``manifests`` for each backend kind that has its file."""
    if not args.triton:
        return
    from ..artifacts.triton import write_model

    for manifest in manifests:
        for kind in kinds:
            if kind == "tensorrt" and manifest.engine is None:
                continue
            log(f"{prog}: Triton model {write_model(args.triton, manifest, kind, args.triton_instances)}")


def add_builder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT builder")
    g.add_argument("--workspace", help="workspace memory limit, e.g. 8G (default: TensorRT's, the GPU's memory)")
    g.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5 (default 3)")
    g.add_argument("--timing-cache", type=Path, help="timing cache file (default: timing.cache in the engines folder)")
    g.add_argument("--detailed-profiling", action="store_true", help="per-layer detail for the engine inspector")
    g.add_argument("--tf32", action="store_true", help="let fp32 engines use TF32 convolutions (faster, rounder)")


def builder_options(args):
    from ..artifacts.engine import BuildOptions

    return BuildOptions(parse_size(args.workspace) if args.workspace else None, args.opt_level,
                        args.timing_cache, args.detailed_profiling, args.tf32)


def _check(args) -> None:
    if args.workspace:
        parse_size(args.workspace)
    if not 0 <= args.opt_level <= 5:
        raise UsageError(f"--opt-level must be 0..5, got {args.opt_level}")
    if args.triton_instances < 1:
        raise UsageError(f"--triton-instances must be at least 1, got {args.triton_instances}")
    for path in args.onnx:
        if path.suffix != ".onnx":
            raise UsageError(f"{path} is not an .onnx file; pass the files crn-export wrote")
        if not path.is_file():
            raise UsageError(f"{path} not found; pass the .onnx files crn-export wrote (with their .json beside them)")


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _build(args))


def _build(args) -> int:
    from ..artifacts.engine import build_engine
    from ..manifest import Manifest, manifest_for

    options = builder_options(args)
    manifests = [Manifest.read(manifest_for(path)) for path in args.onnx]  # all readable before any build
    for manifest in manifests:
        build_engine(manifest, options, log)
    write_triton(args, manifests, ("tensorrt",))
    log(f"{PROG}: {len(manifests)} engine(s) built. Next: crn-bench {manifests[0].path.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
