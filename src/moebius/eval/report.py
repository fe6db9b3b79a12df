"""Report files of an evaluation: report.json, per_image.csv, summary.csv, summary.md, metrics_by_bin.png.

The report dict is built by :func:`moebius.eval.runner.evaluate`; this module only formats it.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

COLUMNS = [  # (key, header, format)
    ("fid", "FID", "{:.2f}"), ("kid", "KID×10³", "{:.2f}"), ("u_ids", "U-IDS %", "{:.1f}"),
    ("p_ids", "P-IDS %", "{:.1f}"), ("lpips", "LPIPS", "{:.3f}"), ("psnr", "PSNR", "{:.2f}"),
    ("psnr_hole", "PSNR hole", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"), ("ssim_hole", "SSIM hole", "{:.3f}"),
    ("l1", "L1", "{:.4f}"), ("l1_hole", "L1 hole", "{:.4f}"),
]
_SCALE = {"kid": 1000.0, "u_ids": 100.0, "p_ids": 100.0}


def format_cell(entry: dict, key: str, fmt: str) -> str:
    value = entry.get(key)
    if value is None:
        return "–"
    return fmt.format(value * _SCALE.get(key, 1.0))


def present_columns(entries: Sequence[dict]) -> list[tuple[str, str, str]]:
    return [c for c in COLUMNS if any(c[0] in e for e in entries)]


def markdown_table(first_header: str, labelled: Sequence[tuple[str, dict]], with_n: bool = True) -> str:
    """A markdown table: one row per ``(label, summary entry)``, one column per metric present."""
    cols = present_columns([e for _, e in labelled])
    head = [first_header] + (["n"] if with_n else []) + [c[1] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, e in labelled:
        cells = [label] + ([str(e.get("n", ""))] if with_n else []) + [format_cell(e, k, f) for k, _, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def backend_notes(report: dict) -> str:
    lines = [f"- **{k}**: {v}" for k, v in report["backends"].items()]
    lines += [f"- warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> None:
    """Write report.json, per_image.csv, summary.csv, summary.md and (if matplotlib) metrics_by_bin.png."""
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    rows = report["per_image"]
    if rows:
        with open(out_dir / "per_image.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    entries = [("all", report["summary"]["all"])] + [(b["label"], b) for b in report["summary"]["bins"] if b["n"]]
    keys = ["n", "mask_area"] + [c[0] for c in present_columns([e for _, e in entries])]
    with open(out_dir / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bin"] + keys)
        for label, e in entries:
            w.writerow([label] + [e.get(k, "") for k in keys])
    md = [f"# {report['title']}", "",
          f"Method: {report['method']}" + (f" ({report['method_details']})" if report["method_details"] else ""),
          f"Masks: {report['masks']}", f"Images: {report['num_images']}" + (" (SUBSET)" if report["subset"] else ""), "",
          markdown_table("mask area", entries), "", "Backends:", backend_notes(report), ""]
    (out_dir / "summary.md").write_text("\n".join(md))
    plot_bins(report, out_dir / "metrics_by_bin.png")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def plot_bins(report: dict, path: Path) -> bool:
    """LPIPS, hole PSNR, hole SSIM and FID against mask area; False (no file) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot")
        return False
    bins = [b for b in report["summary"]["bins"] if b["n"]]
    panels = [(k, h) for k, h, _ in COLUMNS if k in ("lpips", "psnr_hole", "ssim_hole", "fid")
              and any(b.get(k) is not None for b in bins)]
    if not bins or not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    x = [(b["range"][0] + b["range"][1]) * 50 for b in bins]
    for ax, (key, header) in zip(axes[0], panels):
        ax.plot(x, [b.get(key, float("nan")) if b.get(key) is not None else float("nan") for b in bins], "o-")
        ax.set_xlabel("mask area (%)")
        ax.set_title(header)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report['title']}: {report['method']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
