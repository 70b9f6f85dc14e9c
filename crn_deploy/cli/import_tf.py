"""crn-import: the authors' released TensorFlow CRN checkpoints -> a PyTorch checkpoint, no TensorFlow."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sizes import format_resolution
from ..errors import UsageError
from ._main import log, parse_or_exit, require, run_command

PROG = "crn-import"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("prefix", type=Path, help="checkpoint prefix, e.g. result_256p/model.ckpt (or its folder)")
    p.add_argument("-o", "--output", type=Path, help="PyTorch checkpoint to write (.pt or .safetensors)")
    p.add_argument("--inspect", action="store_true", help="read only the .index: print architecture and variables")
    return p


def _check(args) -> None:
    if not args.inspect and args.output is None:
        raise UsageError("give -o OUTPUT.pt to import, or --inspect to look at the checkpoint")
    if args.output is not None and args.output.suffix not in (".pt", ".pth", ".safetensors"):
        raise UsageError(f"output {args.output} must end in .pt, .pth or .safetensors")


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _inspect(args) if args.inspect else _import(args))


def _describe(arch) -> str:
    config = arch.config
    matches = f"preset {' / '.join(arch.presets)}" if arch.presets else "no released preset (custom widths)"
    return (f"{config.num_modules} modules (heights {config.base[0]}..{config.base[0] * config.scale}), widths "
            f"{list(config.widths)}, {config.num_classes} classes + void, k={config.k}, "
            f"native {format_resolution(config.native_resolution)}, {config.num_parameters():,} parameters; {matches}")


def _importer():
    """The family that reads the TensorFlow checkpoints, as the registry names it."""
    from ..models.registry import model_families

    found = [f.foreign_import for f in model_families().values() if f.foreign_import and
             f.foreign_import.framework == "TensorFlow"]
    if not found:
        raise UsageError("no family here imports TensorFlow checkpoints")
    return found[0]


def _inspect(args) -> int:
    require(PROG, ("torch", "google.protobuf", "google_crc32c"))
    arch = _importer().inspect(args.prefix)
    log(f"{args.prefix}: {_describe(arch)}")
    width = max(len(v.name) for v in arch.variables)
    for info in arch.variables:
        log(f"  {info.name.ljust(width)}  {info.dtype_name:8} {str(list(info.shape)):22} {info.size / 2**20:9.2f} MiB")
    ignored_mib = sum(v.size for v in arch.ignored) / 2**20
    log(f"  + {len(arch.ignored)} other variables ignored (Adam slots, optimizer state: {ignored_mib:.1f} MiB)")
    return 0


def _import(args) -> int:
    require(PROG, ("torch", "google.protobuf", "google_crc32c"))
    from ..models.checkpoint import save_checkpoint

    loaded, arch = _importer().load(args.prefix)
    log(f"{PROG}: {_describe(arch)}")
    save_checkpoint(args.output, loaded.model, loaded.label_set)
    native = format_resolution(arch.config.native_resolution)
    log(f"{PROG}: wrote {args.output}. Next: crn-export {args.output} --res {native}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
