"""Benchmark outputs beyond the terminal: CSV, and a Markdown report with plots and image grids."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from ..data.images import write_image
from ..files import ensure_writable_dir, write_bytes_atomic
from .report import format_table

CSV_COLUMNS = ("artifact", "backend", "device", "precision", "resolution", "batch", "p50_ms", "p90_ms", "p95_ms",
               "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "fps", "ms_per_megapixel", "speedup_vs_torch",
               "max_abs", "mean_abs", "psnr_db", "ssim", "frac_off_gt2", "status")
ERROR_GAIN = 16  # the heatmap shows |error| x 16, so a few levels of FP16 error are visible


def write_csv(report: dict, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in report["rows"]:
        flat = {**row, **{f"{k}_ms": v for k, v in row.get("latency_ms", {}).items()}, **(row.get("parity") or {})}
        writer.writerow({k: ("" if flat.get(k) is None else flat.get(k)) for k in CSV_COLUMNS})
    write_bytes_atomic(Path(path), buffer.getvalue().encode())


def write_report(report: dict, folder: Path, samples: dict) -> list[str]:
    """report.md, plots (needs matplotlib) and grids; returns notes about anything left out."""
    folder = Path(folder)
    ensure_writable_dir(folder)
    notes, figures = [], []
    for resolution, sample in samples.items():
        name = f"grid-{resolution}.png"
        write_image(folder / name, image_grid(sample))
        figures.append((f"Label map, PyTorch FP32 reference, then each backend's output and its error x{ERROR_GAIN} "
                        f"({resolution}, first sample)", name))
    try:
        figures += _plots(report, folder)
    except ImportError:
        notes.append("plots need matplotlib: pip install 'crn-deploy[report]'")
    write_bytes_atomic(folder / "report.md", _markdown(report, figures, notes).encode())
    return notes


def image_grid(sample: dict) -> np.ndarray:
    """One row per backend: label map | PyTorch FP32 reference | its output | amplified error."""
    rows = []
    for title, output in sample["outputs"].items():
        error = np.abs(output.astype(np.int16) - sample["reference"].astype(np.int16)).max(axis=-1)
        heat = cv2.applyColorMap(np.clip(error * ERROR_GAIN, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        tiles = [(sample["labels"], "labels"), (sample["reference"], "PyTorch FP32"), (output, title),
                 (heat, f"|error| x{ERROR_GAIN}")]
        rows.append(np.concatenate([_caption(tile, text) for tile, text in tiles], axis=1))
    return np.concatenate(rows, axis=0)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    tile = np.ascontiguousarray(tile)
    if text:
        scale = max(0.35, tile.shape[0] / 600)
        cv2.putText(tile, text, (4, int(16 * scale / 0.45)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return tile


def _plots(report: dict, folder: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if "latency_ms" in r]
    labels = [f"{r['backend']} {r['precision']} {r['resolution']}" for r in rows]
    figures = []

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    ax.barh(labels, [r["latency_ms"]["p50"] for r in rows],
            xerr=[[0] * len(rows), [r["latency_ms"]["p99"] - r["latency_ms"]["p50"] for r in rows]])
    ax.set_xlabel("latency, ms (bar: p50; whisker: p99)")
    figures.append(("Latency per backend and resolution", _save(fig, folder / "latency.png")))

    broken = [r for r in rows if "breakdown_ms" in r]
    if broken:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(broken) + 1.5))
        left = np.zeros(len(broken))
        for part in ("h2d", "compute", "d2h"):
            values = [r["breakdown_ms"][part]["mean"] for r in broken]
            ax.barh([f"{r['backend']} {r['precision']} {r['resolution']}" for r in broken], values, left=left,
                    label=part)
            left += values
        ax.set_xlabel("GPU time per frame, ms (mean)")
        ax.legend()
        figures.append(("Latency breakdown: upload, compute, download", _save(fig, folder / "breakdown.png")))

    classes = sorted({c for r in rows for c in r.get("parity", {}).get("per_class", {})})
    if classes:
        fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(classes)), 4))
        width = 0.8 / max(1, len(rows))
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
            per = row.get("parity", {}).get("per_class", {})
            ax.bar(np.arange(len(classes)) + i * width, [per.get(c, {}).get("mean_abs", 0) for c in classes],
                   width, label=label)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=60, ha="right")
        ax.set_ylabel("mean |error| vs PyTorch FP32, levels")
        ax.legend(fontsize=7)
        figures.append(("Parity per semantic class", _save(fig, folder / "parity-per-class.png")))
    return figures


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(path, buffer.getvalue())
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _sweep(report: dict) -> list[str]:
    """The same model and backend at every resolution: latency per megapixel."""
    groups: dict = {}
    for row in report["rows"]:
        if "latency_ms" in row:
            groups.setdefault((row["name"], row["backend"], row["precision"]), []).append(row)
    sweeps = {key: rows for key, rows in groups.items() if len(rows) > 1}
    if not sweeps:
        return []
    lines = ["## Resolution sweep", "", "| model | backend | precision | resolution | p50 ms | ms per megapixel |",
             "|---|---|---|---|---|---|"]
    for (name, backend, precision), rows in sweeps.items():
        for row in sorted(rows, key=lambda r: r["megapixels"]):
            lines.append(f"| {name} | {backend} | {precision} | {row['resolution']} | {row['latency_ms']['p50']:.2f} | "
                         f"{row['ms_per_megapixel']:.2f} |")
    return [*lines, ""]


def _markdown(report: dict, figures: list[tuple[str, str]], notes: list[str]) -> str:
    settings = report["settings"]
    lines = [f"# {report['tool']} report", "", "```", format_table(report), "```", "",
             f"Inputs: {settings['inputs']}. Warm-up {settings['warmup_s']} s, then at least "
             f"{settings['min_iterations']} calls and {settings['min_duration_s']} s per row.", ""]
    for caption, name in figures:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    lines += _sweep(report)
    worst = [(row, cls, v) for row in report["rows"] for cls, v in row.get("parity", {}).get("per_class", {}).items()]
    worst.sort(key=lambda item: -item[2]["mean_abs"])
    if worst:
        lines += ["## Where errors concentrate (worst classes)", "",
                  "| artifact | backend | class | pixels | mean abs | max abs | PSNR dB |",
                  "|---|---|---|---|---|---|---|"]
        for row, cls, v in worst[:12]:
            psnr = "identical" if v["psnr_db"] is None else f"{v['psnr_db']:.1f}"
            lines.append(f"| {row['artifact']} | {row['backend']} | {cls} | {v['pixels']} | {v['mean_abs']:.4f} | "
                         f"{v['max_abs']:.0f} | {psnr} |")
        lines.append("")
    lines += [f"_{note}_" for note in notes]
    return "\n".join(lines) + "\n"
