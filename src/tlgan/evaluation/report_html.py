"""The report page: a :class:`~tlgan.evaluation.measure.ReportResult` rendered with a Jinja2 template.

The template (``templates/report.html.j2``, with ``templates/report.css`` inlined) autoescapes
everything it prints, so attribute, method and model names reach the page as text whatever
they hold. The filters below format numbers the way every table of the page shows them: a
missing value is an en dash, negative numbers carry a real minus sign.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from tlgan.evaluation.measure import ReportResult, amount_label

TEMPLATE = "report.html.j2"
DASH = "\u2013"
MINUS = "\u2212"


# --------------------------------------------------------------------------- filters
def num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """'0.123', '+0.123' with ``signed``, a minus sign for negatives, an en dash for None / NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    value = round(float(value), digits) + 0.0  # no "-0.000"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", MINUS)


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal: '97.5 %' (thin space), an en dash for None."""
    return DASH if value is None else f"{100 * value:.1f}\u2009%"


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite values (None when there are none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def signed(value: float) -> str:
    """An edit step as it is written in labels: '+2', '-2'."""
    return f"{float(value):+g}"


def thousands(value: int) -> str:
    return f"{int(value):,}"


def accuracy_of(metrics: Mapping[str, Any]) -> float | None:
    """A finder's own accuracy among its metrics, whatever the finder calls it."""
    for key in ("val_accuracy", "accuracy", "val_acc", "holdout_accuracy", "test_accuracy"):
        if metrics.get(key) is not None:
            return metrics[key]
    for key, value in metrics.items():
        if "accuracy" in key and value is not None:
            return value
    return None


def worst(entry: Mapping[str, Any] | None) -> str:
    """'Male (−0.213)': the other attribute that moved most at the largest step."""
    if not entry or not entry.get("largest_off_target_attribute"):
        return DASH
    k = max(range(len(entry["largest_off_target"])), key=lambda i: abs(entry["largest_off_target"][i]))
    return f"{entry['largest_off_target_attribute'][k]} ({num(entry['largest_off_target'][k], 3, True)})"


def short_spec(spec: str) -> str:
    """A model spec for a title: registered names as they are, file specs by their file name."""
    if ".py:" in spec:
        path, func = spec.rsplit(":", 1)
        return f"{Path(path).name}:{func}"
    return Path(spec).name if ("/" in spec or os.sep in spec) else spec


FILTERS = {
    "num": num,
    "pct": pct,
    "mean": mean,
    "signed": signed,
    "thousands": thousands,
    "amount": amount_label,
    "worst": worst,
    "sign_mark": lambda sign: "+" if sign > 0 else MINUS,
    "suffix": lambda text, tail: f"{text}{tail}",
    "format_target": lambda step: f"target change ({step})",
    "pair_label": lambda pair: f"cos {pair.replace('~', ' vs ')}",
    "accuracy": accuracy_of,
}


@cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaping on, undefined names are errors)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tlgan.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    return env


def _demo_view(result: ReportResult) -> dict[str, Any] | None:
    """What the page needs of the locking demonstration: the pair, its numbers and their key names."""
    data = result.lock_demo_result
    if data is None:
        return None
    attribute, lock = result.lock_demo
    return {
        "attribute": attribute,
        "lock": lock,
        "data": data,
        "own_key": f"{attribute.lower()}_change",
        "prob_key": f"{lock.lower()}_probability",
        "figure": f"{attribute}_minus_lock_{lock}".lower(),
    }


def toc(result: ReportResult) -> list[tuple[str, str]]:
    """(anchor, heading) of every section of the page, in order."""
    out = [
        ("overview", "Overview"),
        ("separability", "Separability"),
        ("geometry", "Axis geometry"),
        ("correlations", "Attribute correlations"),
    ]
    if result.edit_effect:
        out.append(("edits", "Edit effect"))
    if result.ground_truth:
        out.append(("truth", "Ground truth"))
    out.append(("methods", "Method comparison"))
    if result.unsupervised:
        out.append(("unsupervised", "Unsupervised directions"))
    if result.spaces:
        out.append(("spaces", "Latent spaces"))
    if result.text_attributes:
        out.append(("words", "Attributes in words"))
    out.append(("definitions", "How the numbers are made"))
    return out


def report_page(
    result: ReportResult,
    summary: Mapping[str, Any],
    timings: Mapping[str, float],
    figures: Mapping[str, bytes],
    figure_dir: str = "figures",
) -> str:
    """The self-contained HTML page: ``figures`` {name: PNG bytes} embedded as base64, inline CSS, no scripts."""
    ctx = result.context
    n_fit = ctx.axes["info"].get("n")
    uns = result.unsupervised
    available = [m for m, info in uns["methods"].items() if info["available"]] if uns else []
    has_truth = bool(uns) and any(
        "cosine_to_truth" in row for per in uns["attributes"].values() for row in per.values()
    )
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            title=f"tlgan report: {short_spec(ctx.run['generator'])} / {short_spec(ctx.run['classifier'])}",
            ctx=ctx,
            result=result,
            summary=summary,
            timings=timings,
            demo=_demo_view(result),
            figures={name: base64.b64encode(png).decode("ascii") for name, png in figures.items()},
            figure_dir=figure_dir,
            toc=toc(result),
            fitted_n=n_fit if isinstance(n_fit, int) else None,
            split=round(100 * (1 - ctx.svm["val_fraction"])),
            uns=uns,
            uns_available=available,
            uns_has_truth=has_truth,
        )
    )
