"""The dashboard's plots: contributions, per-class Shapley, confusion (matplotlib, PNG).

Audit ROC curves are drawn by :func:`medsynth_fl.privacy.plot_roc_curves`,
which the site's own audit report uses too.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the coordinator has no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KINDS = (("shapley", "Shapley"), ("loo", "leave-one-out"))


def _save(fig, out: Path) -> Path:
    """Lay out, write ``out`` (folders made) and free the figure."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def contribution_bars(contributions: dict, out: Path, value: str = "auc") -> Path:
    """Shapley and leave-one-out values per site, with their 95 % intervals."""
    entry = contributions[value]
    sites = list(entry["sites"])
    x = np.arange(len(sites))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(sites) + 1.5), 3.4), dpi=110)
    for i, (kind, label) in enumerate(KINDS):
        means = np.array([entry["sites"][s][kind]["mean"] for s in sites])
        lows = np.array([entry["sites"][s][kind]["ci_low"] for s in sites])
        highs = np.array([entry["sites"][s][kind]["ci_high"] for s in sites])
        ax.bar(
            x + (i - 0.5) * width,
            means,
            width,
            yerr=np.vstack([means - lows, highs - means]).clip(min=0),
            capsize=3,
            label=label,
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, sites, rotation=20, ha="right")
    ax.set_ylabel(f"contribution to {value.replace('_', ' ')}")
    ax.set_title(
        f"v(all) = {entry['v_all']:.3f}, v(∅) = {entry['v_empty']:.3f} "
        f"({entry['method']} Shapley)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return _save(fig, out)


def class_heatmap(contributions: dict, out: Path) -> Path:
    """Site × class heatmap of the Shapley value of each class's one-vs-rest AUC."""
    per_class = contributions["per_class_shapley"]
    sites = list(per_class)
    classes = list(contributions["class_names"])
    grid = np.array(
        [
            [np.nan if per_class[s][c] is None else per_class[s][c] for c in classes]
            for s in sites
        ],
        dtype=float,
    )
    bound = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    fig, ax = plt.subplots(
        figsize=(0.8 * len(classes) + 2.5, 0.5 * len(sites) + 1.6), dpi=110
    )
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for i in range(len(sites)):
        for j in range(len(classes)):
            value = grid[i, j]
            text = "–" if np.isnan(value) else f"{value:+.2f}"
            dark = not np.isnan(value) and abs(value) > 0.6 * bound
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(sites)), sites)
    ax.set_title(
        "Shapley value of each class's AUC (– : no test positives)", fontsize=9
    )
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, out)


def confusion_plot(report: dict, out: Path) -> Path:
    """The shared model's confusion matrix: counts, coloured by row share (recall)."""
    names = report["class_names"]
    counts = np.array(report["confusion"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig, ax = plt.subplots(
        figsize=(0.6 * len(names) + 2.6, 0.6 * len(names) + 1.6), dpi=110
    )
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(
        range(len(names)),
        [f"{n} ({int(t)})" for n, t in zip(names, totals[:, 0], strict=True)],
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class (test images)")
    ax.set_title(
        "Shared model on the held-out test set (colour: row share)", fontsize=9
    )
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, out)
