"""The benchmark table for the terminal, and its JSON file."""

from __future__ import annotations

from pathlib import Path

from ..files import write_json_atomic

_COLUMNS = (
    ("artifact", "{artifact}"), ("backend", "{backend}"), ("prec", "{precision}"), ("res", "{resolution}"),
    ("p50 ms", "{p50}"), ("p90 ms", "{p90}"), ("p99 ms", "{p99}"), ("fps", "{fps}"), ("thru fps", "{throughput}"),
    ("vs torch", "{speedup}"),
    ("max|Δ|", "{max_abs}"), ("mean|Δ|", "{mean_abs}"), ("PSNR dB", "{psnr}"), ("status", "{status}"),
)


def format_table(report: dict) -> str:
    machine, versions = report["machine"], report["versions"]
    header = (f"{report['tool']} on {machine['cpu']} ({machine['logical_cores']} logical cores"
              + (f", GPU {machine['gpu']['name']}" if "gpu" in machine else "") + ") — "
              + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "crn_deploy"))
    cells = [[fmt.format(**_cells(row)) for _, fmt in _COLUMNS] for row in report["rows"]]
    titles = [title for title, _ in _COLUMNS]
    widths = [max(len(c) for c in column) for column in zip(titles, *cells, strict=True)]
    lines = [header, "  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines += [f"error in {row['artifact']} [{row['backend']}]: {row['error']}"
              for row in report["rows"] if "error" in row]
    lines += [f"skipped {entry}" for entry in report.get("skipped", [])]
    lines += [f"warning: {entry}" for entry in report.get("warnings", [])]
    lines += [f"warning: {row['artifact']} [{row['backend']}]: {warning}"
              for row in report["rows"] for warning in bound_warnings(row)]
    reference = report.get("settings", {}).get("reference", "the PyTorch FP32 reference")
    lines.append(f"parity: against {reference} on the same label maps; "
                 "vs torch: PyTorch p50 / this p50 at the same precision and device "
                 "(* against PyTorch FP32: PyTorch FP16 on a CPU is opt-in, --torch-cpu-fp16); thru fps: frames "
                 "submitted ahead, overlapping where the backend pipelines (TensorRT)")
    return "\n".join(lines)


def bound_warnings(row: dict) -> list[str]:
    """trtexec's hints: enqueue-bound when median enqueue > 0.8 x median GPU compute; transfer-bound
    when a median copy takes as long as the compute."""
    split = row.get("breakdown_ms")
    if not split:
        return []
    compute = split["compute"]["p50"]
    warnings = []
    if split["enqueue"]["p50"] > 0.8 * compute:
        warnings.append(f"enqueue-bound (enqueue {split['enqueue']['p50']:.3f} ms vs compute {compute:.3f} ms): "
                        "CUDA graphs or a larger batch help")
    if max(split["h2d"]["p50"], split["d2h"]["p50"]) >= compute:
        warnings.append("transfer-bound (a copy takes as long as the compute): keep label maps on the GPU")
    return warnings


def _cells(row: dict) -> dict:
    lat, parity = row.get("latency_ms"), row.get("parity")
    dash = "-"
    return {
        **row,
        "p50": f"{lat['p50']:.2f}" if lat else dash,
        "p90": f"{lat['p90']:.2f}" if lat else dash,
        "p99": f"{lat['p99']:.2f}" if lat else dash,
        "fps": f"{row['fps']:.2f}" if lat else dash,
        "throughput": f"{row['throughput_fps']:.2f}" if "throughput_fps" in row else dash,
        "speedup": _speedup(row),
        "max_abs": f"{parity['max_abs']:.0f}" if parity else dash,
        "mean_abs": f"{parity['mean_abs']:.4f}" if parity else dash,
        "psnr": (dash if not parity else "inf" if parity["psnr_db"] is None else f"{parity['psnr_db']:.1f}"),
    }


def _speedup(row: dict) -> str:
    if "speedup_vs_torch" not in row:
        return "-"
    mark = "" if row["speedup_reference"].endswith(row["precision"]) else "*"
    return f"{row['speedup_vs_torch']:.2f}x{mark}"


def write_json(report: dict, path: Path) -> None:
    write_json_atomic(Path(path), report)
