"""The report's figures: a :class:`~tlgan.evaluation.measure.ReportResult` drawn with matplotlib.

:func:`draw_report` writes every figure as ``<name>.png`` into a folder (with the primitives of
:mod:`tlgan.evaluation.plots`) and returns the PNG bytes by name, in drawing order, for the page
to embed. It measures nothing: the edit grids' images come with the result.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tlgan.evaluation import plots
from tlgan.evaluation.measure import ReportResult


class _Figures:
    """Draws figures into a folder and remembers the PNG bytes of each, by name."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.png: dict[str, bytes] = {}

    def add(self, name: str, draw, *args, **kwargs) -> None:
        self.png[name] = draw(*args, path=self.dir / f"{name}.png", **kwargs)


def draw_report(result: ReportResult, directory: str | os.PathLike) -> dict[str, bytes]:
    """Draw the figures of ``result`` into ``directory``; returns {name: PNG bytes} in drawing order."""
    figs = _Figures(Path(directory))
    ctx = result.context
    names = list(ctx.run["attributes"])
    axes_names = list(ctx.axes["attributes"])
    locks = ctx.locks
    sep, geometry, correlations = result.separability, result.geometry, result.correlations
    figs.add(
        "separability",
        plots.bar_chart,
        names,
        {
            "validation (top/bottom)": [sep[a]["val_accuracy"] for a in names],
            "remaining samples": [sep[a]["remaining_accuracy"] for a in names],
        },
        title="Linear separability in latent space (SVM)",
        ylabel="accuracy",
        ylim=(0.4, 1.0),
        reference=0.5,
        reference_label="chance",
    )
    figs.add(
        "cosine_before",
        plots.heatmap,
        geometry["before"],
        axes_names,
        axes_names,
        title=f"Cosine between axes ({ctx.axes['method']})",
        colorbar_label="cosine",
    )
    if locks:
        figs.add(
            "cosine_after",
            plots.heatmap,
            geometry["after"],
            axes_names,
            axes_names,
            title=f"Cosine after disentangling from {', '.join(locks)}",
            colorbar_label="cosine",
        )
    figs.add(
        "correlation_generated",
        plots.heatmap,
        correlations["generated"],
        names,
        names,
        title="Label correlation, generated samples",
        colorbar_label="phi coefficient",
    )
    if "data" in correlations:
        common = correlations["common_attributes"]
        figs.add(
            "correlation_data",
            plots.heatmap,
            correlations["data"],
            common,
            common,
            title="Label correlation, labelled data",
            colorbar_label="phi coefficient",
        )
        figs.add(
            "correlation_difference",
            plots.heatmap,
            correlations["difference"],
            common,
            common,
            title="Generated minus data",
            colorbar_label="difference of phi",
        )
    if result.edit_effect is not None:
        _edit_figures(figs, result)
    truth = result.ground_truth
    if truth is not None and truth["learning_curve"] is not None:
        curve = truth["learning_curve"]
        figs.add(
            "learning_curve",
            plots.learning_curves,
            curve["sizes"],
            {m: curve["methods"][m]["mean"] for m in curve["methods"]},
            lower={m: curve["methods"][m]["min"] for m in curve["methods"]},
            title="Recovery of the true axes",
        )
    comparison = result.methods
    if len(comparison["methods"]) > 1:
        # Angles rather than cosines: methods agree closely, and 0.99 vs 0.999 is 8 vs 2.6 degrees.
        angles = {
            pair.replace("~", " vs "): [
                math.degrees(math.acos(max(-1.0, min(1.0, cos[a])))) for a in comparison["attributes"]
            ]
            for pair, cos in comparison["cosine"].items()
        }
        figs.add(
            "method_angles",
            plots.bar_chart,
            comparison["attributes"],
            angles,
            title="Angle between the axes of two methods",
            ylabel="degrees",
        )
    if comparison.get("entanglement"):
        figs.add(
            "method_entanglement",
            plots.bar_chart,
            comparison["attributes"],
            {
                m: [comparison["entanglement"][m][a] for a in comparison["attributes"]]
                for m in comparison["entanglement"]
            },
            title="Entanglement ratio per method (unlocked edits)",
            ylabel="largest off-target / target",
        )
    if result.spaces is not None:
        _spaces_figures(figs, result.spaces)
    return figs.png


def _spaces_figures(figs: _Figures, spaces: dict) -> None:
    """Truth cosine per attribute and space, and the layer-range ratios (section "Latent spaces")."""
    rows = spaces["spaces"]
    names = [a for a in spaces["attributes"] if all(a in r["cosine_to_truth"] for r in rows.values())]
    figs.add(
        "spaces_cosine",
        plots.bar_chart,
        names,
        {
            f"{space} ({spaces['method']})": [r["cosine_to_truth"][a] for a in names]
            for space, r in rows.items()
        },
        title="Cosine to the true axis, fitted in each space on the same faces",
        ylabel="cosine",
        ylim=(0.0, 1.0),
    )
    layers = spaces["layers"]
    if layers:
        attrs = list(layers["attributes"])
        figs.add(
            "spaces_layers",
            plots.bar_chart,
            attrs,
            {
                "own layers / all": [layers["attributes"][a]["own_ratio"] for a in attrs],
                "other layers / all": [layers["attributes"][a]["other_ratio"] for a in attrs],
            },
            title="Classifier response to w-axis edits on an attribute's own wp layers",
            ylabel="fraction of the all-layer effect",
            ylim=(0.0, 1.1),
        )


def _edit_figures(figs: _Figures, result: ReportResult) -> None:
    """Entanglement bars, change heatmaps and the edit grids."""
    effect, locks, steps = result.edit_effect, result.context.locks, result.context.steps
    names = effect["axes"]
    ent = effect["entanglement"]
    series = {"unlocked": [ent[a]["ratio"] for a in names]}
    if locks:
        series[f"locked ({', '.join(locks)})"] = [ent[a]["ratio_locked"] for a in names]
    figs.add(
        "entanglement",
        plots.bar_chart,
        names,
        series,
        title="Entanglement ratio per axis",
        ylabel="largest off-target / target change",
    )
    step_idx = max(range(len(steps)), key=lambda k: (abs(steps[k]), steps[k]))
    step = steps[step_idx]
    clf_attrs = effect["attributes"]
    for variant in ("unlocked", "locked"):
        table = effect[variant]
        if not table:
            continue
        rows = list(table)
        matrix = [table[a]["change"][step_idx] for a in rows]
        top = max(0.05, max(abs(v) for row in matrix for v in row))
        label = "" if variant == "unlocked" else f" with {', '.join(locks)} locked"
        figs.add(
            f"edit_change_{variant}",
            plots.heatmap,
            matrix,
            rows,
            clf_attrs,
            title=f"Mean change of P(attribute) for a move of {step:+g} along each axis{label}",
            colorbar_label="change of probability",
            vmin=-top,
            vmax=top,
            cmap="PuOr_r",
            xlabel="attribute read by the classifier",
            ylabel="axis moved along",
        )
    for grid in result.grids:
        figs.add(
            grid.name,
            plots.image_grid,
            grid.images,
            grid.cols,
            row_labels=grid.row_labels,
            col_labels=grid.col_labels,
            title=grid.title,
            **({"scale": grid.scale} if grid.scale is not None else {}),
        )
