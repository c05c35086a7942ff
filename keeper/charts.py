"""PNG charts for the analytics commands (`keeper backtest`, `keeper whatif`): matplotlib, headless.

Floats only here: charts are for display; every figure they show is printed exactly in the tables and
CSV files next to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on a server, and no GUI toolkit import

import matplotlib.pyplot as plt  # noqa: E402 - after the backend choice


def _finish(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str, *, legend: bool, grid_axis: str) -> None:
    """Title, axis labels, grid and legend, then the PNG at `path` (its folder made as needed)."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis=grid_axis, alpha=0.3)
    if legend:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def line_chart(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    step: bool = False,
) -> Path:
    """One line per series name → (xs, ys); written to `path` (PNG). Returns the path."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for name, (xs, ys) in series.items():
            if step:
                ax.step(list(xs), list(ys), where="post", label=name)
            else:
                ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
        _finish(fig, ax, path, title, xlabel, ylabel, legend=len(series) > 1, grid_axis="both")
    finally:
        plt.close(fig)
    return path


def bar_chart(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
) -> Path:
    """Grouped bars: one group per label, one bar per series name → values (same length as labels)."""
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(labels) * max(1, len(series))), 4.5), dpi=100)
    try:
        n = max(1, len(series))
        width = 0.8 / n
        for i, (name, values) in enumerate(series.items()):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, list(values), width=width, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(list(labels), rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center")
        _finish(fig, ax, path, title, xlabel, ylabel, legend=len(series) > 1, grid_axis="y")
    finally:
        plt.close(fig)
    return path
