"""Figures for the evaluation report, drawn with Matplotlib's Agg canvas.

Each function draws one figure, writes it atomically as a PNG and returns the PNG bytes
(so the report can embed the same image). Figures are built on a bare
:class:`matplotlib.figure.Figure` attached to an Agg canvas: no pyplot state, no GUI
backend, and nothing depends on the ``MPLBACKEND`` environment variable.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tlgan.io import atomic_path

DPI = 100
SERIES_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return data


def heatmap(
    matrix,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    colorbar_label: str = "",
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "RdBu_r",
    annotate: bool | None = None,
    fmt: str = "{:.2f}",
    xlabel: str = "",
    ylabel: str = "",
) -> bytes:
    """A labelled heatmap of ``matrix`` (R, C); None/NaN cells are drawn grey and left unannotated.

    ``annotate`` writes each value in its cell (default: when the matrix has at most 20 columns).
    """
    values = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in np.asarray(matrix, dtype=object)],
        dtype=float,
    )
    rows, cols = values.shape
    annotate = cols <= 20 if annotate is None else annotate
    cell = 0.42 if annotate else 0.3
    fig = _figure(max(4.5, 2.6 + cell * cols), max(3.0, 1.6 + cell * rows))
    ax = fig.add_subplot(1, 1, 1)
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="#d9d9d9")
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=colormap,
        vmin=vmin,
        vmax=vmax,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(
        range(cols), labels=list(col_labels), rotation=60, ha="right", rotation_mode="anchor", fontsize=8
    )
    ax.set_yticks(range(rows), labels=list(row_labels), fontsize=8)
    ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    if annotate:
        diverging = vmin < 0 < vmax
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                if np.isfinite(v):
                    # White text on dark cells: the ends of a diverging map, the top of a sequential one.
                    t = (v - vmin) / ((vmax - vmin) or 1.0)
                    dark = abs(t - 0.5) > 0.3 if diverging else t > 0.6
                    colour = "white" if dark else "black"
                    # "+ 0.0" turns a rounded -0.0 into 0.0, so no cell reads "-0.00".
                    ax.text(
                        j,
                        i,
                        fmt.format(round(v, 2) + 0.0),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color=colour,
                    )
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    if colorbar_label:
        bar.set_label(colorbar_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return _save(fig, path)


def bar_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    ylim: tuple | None = None,
    reference: float | None = None,
    reference_label: str = "",
) -> bytes:
    """Grouped vertical bars: one group per label, one bar per series ({series name: values (L,)}).

    Missing values (None) leave a gap. ``reference`` draws a dashed horizontal line (e.g. chance).
    """
    names = list(series)
    count = len(labels)
    fig = _figure(max(5.0, 1.5 + 0.38 * count * max(1, len(names)) ** 0.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(names))
    x = np.arange(count)
    for k, name in enumerate(names):
        vals = np.array([np.nan if v is None else float(v) for v in series[name]], dtype=float)
        ax.bar(
            x - 0.4 + width * (k + 0.5),
            np.nan_to_num(vals, nan=0.0),
            width,
            label=name,
            color=SERIES_COLOURS[k % len(SERIES_COLOURS)],
            edgecolor="none",
        )
    if reference is not None:
        ax.axhline(reference, color="#555555", linestyle="--", linewidth=1, label=reference_label or None)
    ax.set_xticks(x, labels=list(labels), rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if len(names) > 1 or reference_label:
        # Outside the axes, so that no bar hides behind it.
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def learning_curves(
    sizes: Sequence[int],
    curves: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str = "mean cosine to the true axis",
    lower: Mapping[str, Sequence[float | None]] | None = None,
) -> bytes:
    """Lines of a value against the sample count (log x axis), one per method.

    ``lower`` (same keys) draws a second, dotted line per method (e.g. the worst attribute).
    """
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for k, (name, values) in enumerate(curves.items()):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        ys = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        ax.plot(sizes, ys, marker="o", color=colour, label=f"{name} (mean)")
        if lower and name in lower:
            lows = np.array([np.nan if v is None else float(v) for v in lower[name]], dtype=float)
            ax.plot(sizes, lows, marker=".", linestyle=":", color=colour, label=f"{name} (worst attribute)")
    if len(sizes) > 1:
        ax.set_xscale("log")
    ax.set_xticks(list(sizes), labels=[f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("samples used to fit", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(color="#e5e5e5", linewidth=0.8)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return _save(fig, path)


def image_grid(
    images: torch.Tensor,
    nrow: int,
    path: str | os.PathLike,
    *,
    title: str,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    scale: float = 1.5,
) -> bytes:
    """A grid of images (N, 3, H, W) in [-1, 1], ``nrow`` per row, with row and column labels.

    ``scale`` is screen pixels per image pixel (nearest-neighbour, so small faces stay sharp).
    """
    images = images.detach().float().cpu().clamp(-1, 1)
    n, _, h, w = images.shape
    cols = int(nrow)
    rows = -(-n // cols)
    gap = 2
    mosaic = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), dtype=np.float32)
    pixels = ((images + 1) / 2).permute(0, 2, 3, 1).numpy()
    for k in range(n):
        r, c = divmod(k, cols)
        mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = pixels[k]
    label_w = 1.6 if row_labels else 0.2
    fig = _figure(label_w + mosaic.shape[1] * scale / DPI, 0.7 + mosaic.shape[0] * scale / DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks(
        [c * (w + gap) + w / 2 for c in range(len(col_labels))], labels=list(col_labels), fontsize=8
    )
    ax.set_yticks(
        [r * (h + gap) + h / 2 for r in range(len(row_labels))], labels=list(row_labels), fontsize=8
    )
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10, pad=18 if col_labels else 6)
    return _save(fig, path)
