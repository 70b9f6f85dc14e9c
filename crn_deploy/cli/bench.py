"""crn-bench: latency and parity of every exported artifact in a folder, against the PyTorch reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ._main import log, parse_or_exit, run_command

PROG = "crn-bench"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("folder", nargs="?", type=Path, default=Path("engines"), help="artifacts folder (default engines/)")
    p.add_argument("--labels", type=Path, help="folder of label images (ids, colours, or Cityscapes *_labelIds.png)")
    p.add_argument("--strict-labels", "--strict-colors", dest="strict_colors", action="store_true",
                   help="refuse label images with colours outside the palette or ids past the label set (default: "
                        "they light nothing, with a warning)")
    p.add_argument("--label-map", metavar="NAME|FILE",
                   help="with --labels: read them in another label space (carla, carla-palette, carla-0.9.13, "
                        "carla-0.9.13-palette, or a .toml/.json mapping file; see docs/streaming.md)")
    p.add_argument("--samples", type=int, default=4, help="synthetic layouts for parity (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (at least one call; default 1)")
    p.add_argument("--iterations", type=int, default=10, help="minimum timed calls (default 10)")
    p.add_argument("--duration", type=float, default=3.0, help="minimum timed seconds (default 3)")
    p.add_argument("--backend", action="append", choices=("tensorrt", "openvino", "onnxruntime", "torch"),
                   help="repeatable (default: all); tensorrt: TensorRT and TensorRT-RTX engines, openvino: OpenVINO "
                        "CPU engines")
    p.add_argument("--device", action="append", choices=("cpu", "cuda"), help="repeatable (default: all present)")
    p.add_argument("--torch-cpu-fp16", action="store_true",
                   help="also time PyTorch FP16 on the CPU (no fast kernels there: very slow)")
    p.add_argument("--threads", type=int,
                   help="CPU threads per map: ONNX Runtime's intra-op threads, OpenVINO's inference threads "
                        "(default: each library's own choice)")
    p.add_argument("--checkpoint", type=Path, help="the source checkpoint, if it moved since export")
    p.add_argument("--max-abs", type=float, help="gate: FAILED if any row's max |Δ| exceeds this (levels)")
    p.add_argument("--min-psnr", type=float, help="gate: FAILED if any row's PSNR is below this (dB)")
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--csv", type=Path, help="write one CSV line per row")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.md with plots and image grids into DIR")
    return p


def _check(args) -> None:
    from ..data.label_mapping import load_label_map

    if args.samples < 1 or args.iterations < 1 or args.warmup < 0 or args.duration < 0:
        raise UsageError("--samples and --iterations must be >= 1, --warmup and --duration >= 0")
    if args.label_map is not None:
        if args.labels is None:
            raise UsageError("--label-map reads the label images of --labels DIR: give both, or neither")
        args.label_map = load_label_map(args.label_map)


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _bench(args))


def _bench(args) -> int:
    from ..files import ensure_writable_dir
    from ..measure.bench import BACKENDS, BenchOptions, find_artifacts, run_bench
    from ..measure.report import format_table, write_json

    options = BenchOptions(
        labels_dir=args.labels, strict_colors=args.strict_colors, label_map=args.label_map, samples=args.samples,
        warmup_s=args.warmup,
        iterations=args.iterations,
        duration_s=args.duration, backends=tuple(args.backend or BACKENDS), devices=tuple(args.device or ()),
        torch_cpu_fp16=args.torch_cpu_fp16, checkpoint=args.checkpoint, threads=args.threads,
        max_abs=args.max_abs, min_psnr=args.min_psnr,
    )
    outputs = [path.parent for path in (args.json, args.csv) if path] + ([args.report] if args.report else [])
    for folder in outputs:
        ensure_writable_dir(folder)  # before minutes of measuring, not after
    log(f"{PROG}: {args.folder}")
    samples = {} if args.report else None
    report = run_bench(find_artifacts(args.folder), options, log, samples)
    log(format_table(report))
    if args.json:
        write_json(report, args.json)
        log(f"{PROG}: wrote {args.json}")
    if args.csv:
        from ..measure.report_files import write_csv

        write_csv(report, args.csv)
        log(f"{PROG}: wrote {args.csv}")
    if args.report:
        from ..measure.report_files import write_report

        for note in write_report(report, args.report, samples):
            log(f"{PROG}: {note}")
        log(f"{PROG}: wrote {args.report / 'report.md'}")
    statuses = [row["status"] for row in report["rows"]]
    if "FAILED" in statuses or "ERROR" in statuses:
        log(f"{PROG}: FAILED ({statuses.count('FAILED')} below the gates, {statuses.count('ERROR')} errors)")
        return 1
    log(f"{PROG}: PASSED" if options.max_abs is not None or options.min_psnr is not None else f"{PROG}: done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
