"""FID and KID over training, read from a run's metrics.jsonl and drawn to a PNG.

The training loop logs evaluations as {"step": N, "images_seen": M, "eval": {"fid_<features>": ...,
"kid_<features>": ..., "kid_std_<features>": ...}}; one line per feature space is drawn, labelled with
its name, so an Inception curve and a shapes-classifier curve are never confused. The x axis is images
shown (comparable across batch sizes and PGGAN's changing minibatch) when every record has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

FID_PREFIX, KID_PREFIX, KID_STD_PREFIX = "fid_", "kid_", "kid_std_"


@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    images: list[int | None] = field(default_factory=list)
    fid: list[float] = field(default_factory=list)
    kid: list[float | None] = field(default_factory=list)
    kid_std: list[float] = field(default_factory=list)


def metrics_file(run: Path) -> Path:
    run = Path(run)
    path = run if run.is_file() else run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl at {run}")
    return path


def read_curves(path: Path) -> dict[str, Curve]:
    """Every feature space's FID/KID records in file order; malformed lines (a run killed mid-write)
    are skipped."""
    curves: dict[str, Curve] = {}
    for line in metrics_file(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        scores = record.get("eval") if isinstance(record, dict) else None
        if not isinstance(scores, dict):
            continue
        for key, value in scores.items():
            if not key.startswith(FID_PREFIX) or not isinstance(value, (int, float)):
                continue
            name = key[len(FID_PREFIX):]
            curve = curves.setdefault(name, Curve())
            curve.steps.append(int(record.get("step", len(curve.steps))))
            curve.images.append(record.get("images_seen"))
            curve.fid.append(float(value))
            curve.kid.append(scores.get(KID_PREFIX + name))
            curve.kid_std.append(float(scores.get(KID_STD_PREFIX + name) or 0.0))
    return curves


def plot_curves(curves: dict[str, Curve], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no FID/KID records (lines with an \"eval\" holding fid_<features>) to plot")
    by_images = all(i is not None for c in curves.values() for i in c.images)
    fig, (ax_fid, ax_kid) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, curve in sorted(curves.items()):
        x = curve.images if by_images else curve.steps
        ax_fid.plot(x, curve.fid, marker="o", markersize=3, label=f"FID ({name})")
        points = [(xi, k, s) for xi, k, s in zip(x, curve.kid, curve.kid_std, strict=True) if k is not None]
        if points:
            xs, ks, ss = zip(*points, strict=True)
            (line,) = ax_kid.plot(xs, ks, marker="o", markersize=3, label=f"KID ({name})")
            ax_kid.fill_between(xs, [k - s for k, s in zip(ks, ss, strict=True)],
                                [k + s for k, s in zip(ks, ss, strict=True)], color=line.get_color(), alpha=0.2)
    for ax, label in ((ax_fid, "FID"), (ax_kid, "KID (mean ± std over subsets)")):
        ax.set_xlabel("images shown" if by_images else "step")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_run(run: Path, out: Path | None = None) -> Path:
    """RUN/metrics.jsonl -> a PNG (default RUN/fid_kid.png)."""
    path = metrics_file(run)
    target = out if out is not None else path.parent / "fid_kid.png"
    return plot_curves(read_curves(path), target, f"{path.parent.name}: FID / KID over training")
