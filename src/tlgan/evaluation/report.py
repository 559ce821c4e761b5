"""The evaluation report: measure a run and its axes, draw the figures, write HTML + JSON.

``write_report`` writes into ``out_dir``::

    report.html        one self-contained page (figures embedded as base64 PNG, inline CSS, no scripts)
    report.json        every number in the page, plus the summary
    figures/*.png      the figures as separate files

All measurements come from :mod:`tlgan.evaluation.metrics`; this module only orchestrates,
renders and writes.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation import metrics as M
from tlgan.evaluation import plots
from tlgan.io import atomic_path, write_json
from tlgan.models.base import Classifier, Generator
from tlgan.sampling import Run

log = logging.getLogger(__name__)

FORMAT = "tlgan.report/1"
FIGURES = "figures"
# The method comparison measures the entanglement of every finder's axes on this many of the
# edit faces (the same faces for all), which keeps `tlgan demo` within its time budget: each
# method costs 2 * steps * attributes * faces generator and classifier passes.
METHOD_EDIT_FACES = 16


# --------------------------------------------------------------------------- helpers
def _clean(obj: Any, digits: int = 5) -> Any:
    """JSON-ready copy: floats rounded to ``digits`` decimals, NaN/inf -> None, tensors -> lists."""
    if isinstance(obj, torch.Tensor):
        obj = obj.tolist()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return round(obj, digits) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, digits) for v in obj]
    if hasattr(obj, "item"):
        return _clean(obj.item(), digits)
    return str(obj)


def _num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    value = round(float(value), digits) + 0.0  # no "-0.000"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "&minus;")


def _amount(value: float) -> str:
    """An edit amount for a label: '+1.5', '-2', '0'."""
    value = float(value) + 0.0
    return "0" if value == 0 else f"{value:+g}".replace("-", "\u2212")


def _short_spec(spec: str) -> str:
    """A model spec for a title: registered names as they are, file specs by their file name."""
    if ".py:" in spec:
        path, func = spec.rsplit(":", 1)
        return f"{Path(path).name}:{func}"
    return Path(spec).name if ("/" in spec or os.sep in spec) else spec


def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{100 * value:.1f}&thinsp;%"


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def _load_data_labels(data) -> tuple[torch.Tensor, list[str], str]:
    """Labels (N, B) bool and names of a labelled CelebA-layout folder (only its attribute file is read).

    ``data`` is a folder path, or an object with ``labels`` (N, B) and ``attributes`` (such as
    :class:`tlgan.data.celeba.CelebAFolder`).
    """
    if hasattr(data, "labels") and hasattr(data, "attributes"):
        return torch.as_tensor(data.labels) > 0, list(data.attributes), str(getattr(data, "root", "data"))
    from tlgan.data.celeba import ATTR_FILE, parse_attribute_file

    root = Path(data)
    if not root.is_dir():
        raise TlganError(
            f"{root}: data folder not found; --data takes a CelebA-layout folder holding {ATTR_FILE}"
        )
    table = parse_attribute_file(root / ATTR_FILE)
    return torch.from_numpy(table.values > 0), list(table.attributes), str(root)


def _pick_face(scores: torch.Tensor, attributes: Sequence[str], want: Mapping[str, bool]) -> int:
    """Index of the first sample whose labels match ``want`` (0 when none does)."""
    mask = torch.ones(len(scores), dtype=torch.bool)
    for name, value in want.items():
        if name in attributes:
            mask &= (scores[:, list(attributes).index(name)] > 0) == value
    hits = torch.nonzero(mask).flatten()
    return int(hits[0]) if len(hits) else 0


def _fitted_on(axes: FeatureAxes, run: Run) -> bool:
    """Whether ``axes`` are exactly what refitting their finder with default options on ``run`` gives.

    ``tlgan fit`` / ``fit_axes`` record the run, its size and seed, and the finder's options in
    ``axes.info``; when all match, refitting would reproduce the same axes, so they are reused.
    """
    from tlgan.axes.finders import FINDERS, make_finder

    info = axes.info
    if axes.method not in FINDERS or list(axes.attributes) != list(run.attributes) or not info.get("run"):
        return False
    try:
        same_run = Path(info["run"]).resolve() == run.path.resolve()
    except (OSError, TypeError):
        return False
    if not same_run or info.get("n") != run.n or info.get("seed") != run.seed:
        return False
    defaults = make_finder(axes.method).get_params()
    return all(k in info and info[k] == v for k, v in defaults.items())


def _grid_steps(steps: Sequence[float]) -> list[float]:
    """Columns of the edit grids: five evenly spaced amounts from -max|step| to +max|step|."""
    top = max(abs(float(s)) for s in steps)
    return [round(top * f, 3) for f in (-1.0, -0.5, 0.0, 0.5, 1.0)]


class _Figures:
    """Draws figures into ``out_dir/figures`` and remembers the PNG bytes for embedding."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / FIGURES
        self.png: dict[str, bytes] = {}

    def add(self, name: str, draw, *args, **kwargs) -> str:
        self.png[name] = draw(*args, path=self.dir / f"{name}.png", **kwargs)
        return name

    def img(self, name: str, alt: str) -> str:
        if name not in self.png:
            return ""
        data = base64.b64encode(self.png[name]).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
            f'<figcaption>{_esc(alt)} <span class="file">({FIGURES}/{name}.png)</span></figcaption></figure>'
        )


# --------------------------------------------------------------------------- the job
def write_report(
    run: Run | str | os.PathLike,
    axes: FeatureAxes,
    out_dir: str | os.PathLike,
    *,
    locks: Sequence[str] = (),
    generator: Generator | None = None,
    classifier: Classifier | None = None,
    data=None,
    methods: Sequence[str] = ("glm", "logistic", "svm"),
    unsupervised: Sequence[str] = ("pca", "sefa"),
    n_components: int = 64,
    edit_faces: int = 64,
    steps: Sequence[float] = (-2.0, 2.0),
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Measure ``run`` and ``axes`` and write ``report.html``, ``report.json`` and figures into ``out_dir``.

    - ``run``: a run folder (or its path) from ``tlgan sample``; its samples are refitted with each
      finder in ``methods`` for the separability table and the method comparison.
    - ``axes``: the axes under test (e.g. from ``tlgan fit``), for the generator of the run.
    - ``locks``: attributes held fixed in the "locked" edits and in the disentangled cosines.
    - ``generator`` / ``classifier``: default to loading the run's own models on ``device``.
    - ``data``: a labelled CelebA-layout folder whose attribute correlations are compared with the
      generated samples'.
    - ``unsupervised``: unsupervised finders (pca, sefa) whose first ``n_components`` components are
      named and matched to the axes under test (see :mod:`tlgan.evaluation.unsupervised`); () skips it.
    - ``edit_faces``: M, the faces (the run's first M samples) the edit effect averages over;
      ``steps`` the edit amounts (latent units along unit axes). 0 faces skips the edit effect.

    Returns the summary: ``separability`` {attr: SVM val_accuracy}, ``entanglement`` {attr:
    {ratio, ratio_locked}}, ``male_change_beard_minus`` (when Beard and Male exist),
    ``cosine_to_truth`` (when the generator knows its true axes), ``correlation_mean_abs_difference``
    (with ``data``), ``seconds``, and the paths written.
    """
    from tlgan.editing.edit import check_axes_for
    from tlgan.models import load_classifier, load_generator

    started = time.perf_counter()
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 2)
        clock[0] = now

    if not isinstance(run, Run):
        run = Run.open(run)
    out_dir = Path(out_dir)
    methods = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
    if not methods:
        raise TlganError(
            "no axis finder to compare: give at least one method, e.g. --methods glm,logistic,svm"
        )
    from tlgan.axes.finders import FINDERS, make_finder

    for method in methods:
        FINDERS.check(method)
        if make_finder(method).uses_generator:
            raise TlganError(
                f"{method!r} finds unsupervised components, not one axis per attribute; give it in "
                f"unsupervised=... (--unsupervised), not in methods"
            )
    for method in unsupervised:
        FINDERS.check(method)
    steps = [float(s) for s in steps]
    if not steps or not all(math.isfinite(s) for s in steps) or all(s == 0 for s in steps):
        raise TlganError(f"edit steps must be finite and not all zero; got {steps} (e.g. -2,2)")
    if edit_faces < 0:
        raise TlganError(f"edit_faces must be >= 0 (got {edit_faces})")
    locks = list(dict.fromkeys(locks))
    for name in locks:
        axes.index(name)

    if generator is None:
        generator = load_generator(run.generator, device)
    if classifier is None:
        classifier = load_classifier(run.classifier, device)
    check_axes_for(axes, generator, run.generator)
    if axes.space != run.space:
        raise TlganError(
            f"the axes live in latent space {axes.space!r} but the run was sampled in {run.space!r}; "
            f"fit axes on this run with `tlgan fit {run.path}`"
        )
    missing = [a for a in axes.attributes if a not in classifier.attributes]
    if missing:
        log.warning("the classifier does not read %s; their edits have no target change", ", ".join(missing))

    latents, scores = run.load()
    attributes = run.attributes
    lap("load")

    # Separability and the method comparison both need every finder fitted on the same samples.
    fit_list = methods + ([] if "svm" in methods else ["svm"])
    fitted = {axes.method: axes} if axes.method in fit_list and _fitted_on(axes, run) else {}
    if fitted:
        log.info(
            "the %s axes under test were fitted on this run with default options; reusing them", axes.method
        )
    fit_errors: dict[str, str] = {}
    for method in fit_list:
        if method in fitted:
            continue
        log.info("fitting %s axes on %d samples", method, len(latents))
        try:
            fitted.update(
                M.fit_methods(latents, scores, attributes, [method], space=run.space, generator=run.generator)
            )
        except TlganError as exc:
            # One finder refusing these samples (e.g. an attribute with one class) must not sink the report.
            log.warning("the %s finder cannot fit this run: %s", method, exc)
            fit_errors[method] = str(exc)
    compared = [m for m in methods if m in fitted]
    if "svm" in fitted:
        separability = M.separability_from_svm(fitted["svm"])
    else:
        separability = {
            a: {"val_accuracy": None, "remaining_accuracy": None, "n_train": None} for a in attributes
        }
    lap("fit")

    geometry = M.axis_geometry(axes, locks)
    data_info = None
    if data is not None:
        data_labels, data_attributes, data_root = _load_data_labels(data)
        correlations = M.compare_correlations(scores > 0, attributes, data_labels, data_attributes)
        data_info = {"path": data_root, "n": int(len(data_labels))}
    else:
        correlations = M.compare_correlations(scores > 0, attributes)
    lap("geometry_and_correlation")

    faces = latents[: min(int(edit_faces), len(latents))]
    effect: dict[str, Any] | None = None
    method_entanglement: dict[str, dict[str, Any]] = {}
    if len(faces):
        log.info("edit effect of the axes under test on %d faces, steps %s", len(faces), steps)
        effect = M.edit_effect(
            generator, classifier, axes, faces, steps, locks, device=device, progress=progress
        )
        lap("edit_effect")
        method_faces = faces[:METHOD_EDIT_FACES]
        for method in compared:
            m_axes = fitted[method]
            shared = [a for a in axes.attributes if a in m_axes.attributes]
            log.info("edit effect of the %s axes on %d faces", method, len(method_faces))
            m_effect = M.edit_effect(
                generator,
                classifier,
                m_axes.subset(shared),
                method_faces,
                steps,
                (),
                device=device,
                progress=progress,
                beard_male=False,
            )
            method_entanglement[method] = m_effect["entanglement"]
        lap("method_edit_effect")

    truth = generator.true_axes(space=axes.space)
    ground_truth = None
    if truth is not None:
        log.info("the generator knows its true axes: learning curves of %s", ", ".join(compared))
        curve = (
            M.learning_curve(latents, scores, attributes, truth, compared, fitted=fitted, progress=progress)
            if compared
            else None
        )
        if curve is not None and "glm" in compared:
            # TL-GAN's own regression target beside the clipped logit.
            variant = M.learning_curve(
                latents,
                scores,
                attributes,
                truth,
                ["glm"],
                finder_kwargs={"glm": {"target": "probability"}},
                progress=progress,
            )
            curve["methods"]["glm (probability target)"] = variant["methods"]["glm"]
            if variant["errors"]:
                curve["errors"]["glm (probability target)"] = variant["errors"]["glm"]
        ground_truth = {"cosine_to_truth": M.cosine_to_truth(axes, truth), "learning_curve": curve}
        lap("learning_curve")
    comparison = (
        M.compare_methods({m: fitted[m] for m in compared}, method_entanglement or None, truth)
        if compared
        else {"methods": [], "attributes": [], "metrics": {}, "cosine": {}, "mean_cosine": {}}
    )
    comparison["errors"] = fit_errors
    comparison["edit_faces"] = len(faces[:METHOD_EDIT_FACES])
    unsupervised_result = None
    if unsupervised and len(faces):
        from tlgan.evaluation.unsupervised import compare_unsupervised

        log.info(
            "unsupervised directions (%s): fitting, naming on %d faces",
            ", ".join(unsupervised),
            len(faces[:METHOD_EDIT_FACES]),
        )
        unsupervised_result = compare_unsupervised(
            axes,
            generator,
            classifier,
            latents,
            faces[:METHOD_EDIT_FACES],
            methods=list(unsupervised),
            n_components=n_components,
            truth=truth,
            steps=steps,
            device=device,
            progress=progress,
        )
        unsupervised_result["supervised"] = {
            "entanglement": comparison.get("entanglement", {}),
            "cosine_to_truth": comparison.get("cosine_to_truth", {}),
        }
        lap("unsupervised")

    # ---- figures
    figs = _Figures(out_dir)
    names = list(attributes)
    figs.add(
        "separability",
        plots.bar_chart,
        names,
        {
            "validation (top/bottom)": [separability[a]["val_accuracy"] for a in names],
            "remaining samples": [separability[a]["remaining_accuracy"] for a in names],
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
        axes.attributes,
        axes.attributes,
        title=f"Cosine between axes ({axes.method})",
        colorbar_label="cosine",
    )
    if locks:
        figs.add(
            "cosine_after",
            plots.heatmap,
            geometry["after"],
            axes.attributes,
            axes.attributes,
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
    if effect is not None:
        _edit_figures(figs, effect, axes, locks, generator, classifier, latents, scores, attributes, steps)
        lap("edit_grids")
    if ground_truth is not None and ground_truth["learning_curve"] is not None:
        curve = ground_truth["learning_curve"]
        figs.add(
            "learning_curve",
            plots.learning_curves,
            curve["sizes"],
            {m: curve["methods"][m]["mean"] for m in curve["methods"]},
            lower={m: curve["methods"][m]["min"] for m in curve["methods"]},
            title="Recovery of the true axes",
        )
    if len(compared) > 1:
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
    if method_entanglement:
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
    lap("figures")

    summary: dict[str, Any] = {
        "separability": {a: separability[a]["val_accuracy"] for a in names},
        "remaining_accuracy": {a: separability[a]["remaining_accuracy"] for a in names},
        "entanglement": effect["entanglement"] if effect else {},
    }
    if effect and "male_change_beard_minus" in effect:
        summary["male_change_beard_minus"] = effect["male_change_beard_minus"]
    if ground_truth is not None:
        summary["cosine_to_truth"] = ground_truth["cosine_to_truth"]
    if "mean_abs_difference" in correlations:
        summary["correlation_mean_abs_difference"] = correlations["mean_abs_difference"]
    summary["max_abs_cos_to_locks"] = geometry["max_abs_cos_to_locks"]
    if unsupervised_result is not None:
        from tlgan.evaluation.unsupervised import findings_summary

        summary["unsupervised"] = findings_summary(unsupervised_result)

    svm_info = fitted["svm"].info if "svm" in fitted else {}
    context = {
        "run": {
            "path": str(run.path),
            "n": run.n,
            "seed": run.seed,
            "generator": run.generator,
            "classifier": run.classifier,
            "space": run.space,
            "latent_dim": int(latents.shape[1]),
            "attributes": names,
        },
        "axes": {
            "method": axes.method,
            "generator": axes.generator,
            "attributes": list(axes.attributes),
            "info": axes.info,
            "metrics": axes.metrics,
        },
        "svm": {
            "ratio": float(svm_info.get("ratio", 0.02)),
            "val_fraction": float(svm_info.get("val_fraction", 0.3)),
        },
        "locks": locks,
        "methods": methods,
        "edit_faces": int(len(faces)),
        "steps": steps,
        "device": device,
        "data": data_info,
    }
    sections = {
        "separability": separability,
        "geometry": geometry,
        "correlations": correlations,
        "edit_effect": effect,
        "ground_truth": ground_truth,
        "methods": comparison,
        "unsupervised": unsupervised_result,
    }
    timings["total"] = round(time.perf_counter() - started, 2)
    summary["seconds"] = timings["total"]

    html_path, json_path = out_dir / "report.html", out_dir / "report.json"
    summary["outputs"] = {
        "html": str(html_path),
        "json": str(json_path),
        "figures": [str(figs.dir / f"{n}.png") for n in figs.png],
    }
    page = _render_html(context, sections, summary, timings, figs)
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_json(
        json_path,
        _clean({"format": FORMAT, "summary": summary, "context": context, "timings": timings, **sections}),
    )
    log.info("wrote the report to %s in %.1f s", html_path, timings["total"])
    return _clean(summary)


def _edit_figures(
    figs: _Figures, effect, axes, locks, generator, classifier, latents, scores, attributes, steps
) -> None:
    """Entanglement bars, change heatmaps and the edit grids."""
    from tlgan.editing.edit import edit_latents, edit_latents_grid, render

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

    space = axes.space
    columns = _grid_steps(steps)
    face = latents[0]
    images = render(generator, edit_latents_grid(face, axes, names, columns), space)
    figs.add(
        "edit_grid",
        plots.image_grid,
        images,
        len(columns),
        row_labels=names,
        col_labels=[_amount(c) for c in columns],
        title="Edits of sample 0 along each axis",
    )
    if locks:
        # Every row, so that the rows line up with the unlocked grid; a locked axis moved on
        # purpose is kept orthogonal to the other locked ones.
        images = render(generator, edit_latents_grid(face, axes, names, columns, locks), space)
        figs.add(
            "edit_grid_locked",
            plots.image_grid,
            images,
            len(columns),
            row_labels=[f"{a} (locked)" if a in locks else a for a in names],
            col_labels=[_amount(c) for c in columns],
            title=f"The same edits with {', '.join(locks)} locked",
        )
    if "male_change_beard_minus" in effect:
        idx = _pick_face(scores, attributes, {"Beard": True, "Male": True})
        z = latents[idx]
        top = max(abs(s) for s in steps)
        amounts = [0.0] + [-top * f for f in (0.5, 1.0, 1.5)]
        moved = torch.stack(
            [edit_latents(z, axes, {"Beard": a}) for a in amounts]
            + [edit_latents(z, axes, {"Beard": a}, ["Male"]) for a in amounts]
        )
        images = render(generator, moved, space)
        with torch.inference_mode():
            male = classifier.probabilities(
                images.to(next(iter(classifier.parameters()), torch.empty(0)).device)
            )
        male = male[:, classifier.attribute_index("Male")].cpu()
        effect["male_change_beard_minus"]["grid"] = {
            "sample": idx,
            "amounts": amounts,
            "male_probability_unlocked": [float(v) for v in male[: len(amounts)]],
            "male_probability_locked": [float(v) for v in male[len(amounts) :]],
        }
        figs.add(
            "beard_minus_lock_male",
            plots.image_grid,
            images,
            len(amounts),
            row_labels=["Beard \u2212, free", "Beard \u2212, Male locked"],
            col_labels=[_amount(a) for a in amounts],
            title=f"Removing the beard of sample {idx}",
            scale=2.0,
        )


# --------------------------------------------------------------------------- HTML
CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --band: #f6f8fa; --accent: #0969da;
        --good: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 6px; }
p, li { max-width: 80ch; }
.sub { color: var(--muted); margin: 0 0 16px; }
nav.toc { background: var(--band); border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px;
          margin: 16px 0 8px; }
nav.toc ol { margin: 4px 0; padding-left: 20px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: right; }
th { background: var(--band); font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
table.kv td:first-child { color: var(--muted); }
table.kv td { text-align: left; }
.scroll { overflow-x: auto; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; }
.file { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.pair figure { margin-top: 6px; flex: 1 1 0; min-width: 320px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 200px; flex: 1; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 13px; }
.good { color: var(--good); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; background: var(--band);
       padding: 1px 4px; border-radius: 3px; }
.note { color: var(--muted); font-size: 13px; }
"""


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}">{head}<tbody>{body}</tbody></table></div>'


def _card(value: str, key: str) -> str:
    return f'<div class="card"><div class="v">{value}</div><div class="k">{key}</div></div>'


def _render_html(context, sections, summary, timings, figs: _Figures) -> str:
    run, ax = context["run"], context["axes"]
    sep, geo, cor = sections["separability"], sections["geometry"], sections["correlations"]
    eff, truth, comp = sections["edit_effect"], sections["ground_truth"], sections["methods"]
    locks = context["locks"]
    svm = context["svm"]
    toc: list[tuple[str, str]] = []
    parts: list[str] = []

    def section(anchor: str, title: str, body: str) -> None:
        toc.append((anchor, title))
        parts.append(f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>')

    # ---- overview
    cards = [
        _card(_pct(_mean(summary["separability"].values())), "mean SVM accuracy, top/bottom samples"),
        _card(_pct(_mean(summary["remaining_accuracy"].values())), "mean SVM accuracy, remaining samples"),
    ]
    if eff:
        ratios = [v["ratio"] for v in eff["entanglement"].values()]
        cards.append(_card(_num(_mean(ratios), 2), "mean entanglement ratio, unlocked"))
        if locks:
            cards.append(
                _card(
                    _num(_mean([v["ratio_locked"] for v in eff["entanglement"].values()]), 2),
                    f"mean entanglement ratio, {', '.join(locks)} locked",
                )
            )
    if "male_change_beard_minus" in summary:
        bm = summary["male_change_beard_minus"]
        verdict = (
            '<span class="good">halved</span>'
            if bm["at_least_halved"]
            else '<span class="bad">not halved</span>'
        )
        cards.append(
            _card(
                f"{_num(bm['unlocked'], 3, True)} &rarr; {_num(bm['locked'], 3, True)}",
                f"change of P(Male) for Beard {bm['step']:+g}: free &rarr; Male locked ({verdict})",
            )
        )
    if "cosine_to_truth" in summary:
        cards.append(
            _card(
                _num(_mean(summary["cosine_to_truth"].values()), 3),
                f"mean cosine of the {_esc(ax['method'])} axes to the true axes",
            )
        )
    if summary.get("correlation_mean_abs_difference") is not None:
        cards.append(
            _card(
                _num(summary["correlation_mean_abs_difference"], 3),
                "mean |difference| of label correlations, generated vs data",
            )
        )
    n_fit = ax["info"].get("n")
    fitted_on = f", fitted on {n_fit:,} samples" if isinstance(n_fit, int) else ""
    info_rows = [
        ("run", f"<code>{_esc(run['path'])}</code>"),
        ("samples", f"{run['n']:,} (seed {run['seed']})"),
        (
            "generator",
            f"<code>{_esc(run['generator'])}</code>, latent space {_esc(run['space'])} "
            f"({run['latent_dim']} dimensions)",
        ),
        ("classifier", f"<code>{_esc(run['classifier'])}</code>, {len(run['attributes'])} attributes"),
        ("axes under test", f"{_esc(ax['method'])}, {len(ax['attributes'])} axes" + fitted_on),
        ("locked attributes", _esc(", ".join(locks)) if locks else "none"),
        ("methods compared", _esc(", ".join(context["methods"]))),
        (
            "edit effect",
            f"{context['edit_faces']} faces, steps {', '.join(_amount(s) for s in context['steps'])}",
        ),
        (
            "labelled data",
            f"<code>{_esc(context['data']['path'])}</code> ({context['data']['n']:,} images)"
            if context["data"]
            else "none (pass --data to compare correlations)",
        ),
        (
            "time",
            f"{timings['total']:.1f} s ("
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timings.items() if k != "total")
            + ")",
        ),
    ]
    section(
        "overview",
        "Overview",
        '<div class="cards">' + "".join(cards) + "</div>" + _table(None, info_rows, "kv"),
    )

    # ---- separability
    freq = cor["generated_frequency"]
    rows = [
        [
            _esc(a),
            _pct(sep[a]["val_accuracy"]),
            _pct(sep[a]["remaining_accuracy"]),
            f"{int(sep[a]['n_train']):,}" if sep[a]["n_train"] is not None else "&ndash;",
            _pct(freq.get(a)),
        ]
        for a in run["attributes"]
    ]
    if "svm" in comp["errors"]:
        rows.insert(
            0,
            [
                f'<span class="bad">the SVM finder could not be fitted: {_esc(comp["errors"]["svm"])}</span>',
                "",
                "",
                "",
                "",
            ],
        )
    section(
        "separability",
        "Separability",
        "<p>How well a hyperplane in latent space separates each attribute, as in InterFaceGAN: a linear SVM "
        f"is trained on the samples with the highest and lowest classifier scores ({_pct(svm['ratio'])} each); "
        "<em>validation</em> is its accuracy on held-out top/bottom samples, <em>remaining</em> its accuracy "
        "on every other sample (the ambiguous middle, so lower).</p>"
        + figs.img("separability", "SVM accuracy per attribute")
        + _table(
            [
                "attribute",
                "validation accuracy",
                "remaining accuracy",
                "SVM training samples",
                "positive rate (generated)",
            ],
            rows,
        ),
    )

    # ---- geometry
    body = (
        "<p>Cosine similarity between the unit axes. Large off-diagonal values mean that moving along one "
        "axis also moves along another. Disentangling projects every axis off the locked axes, so after it "
        "each axis is orthogonal to every locked one.</p>"
        f"<p>Largest |cosine| between two different axes: {_num(geo['max_abs_offdiagonal_before'])} before"
        + (
            f", {_num(geo['max_abs_offdiagonal_after'])} after disentangling from {_esc(', '.join(locks))}"
            if locks
            else ""
        )
        + ".</p>"
        + figs.img("cosine_before", "cosines between the axes under test")
    )
    if locks:
        body += figs.img("cosine_after", "cosines after disentangling")
        rows = [
            [_esc(a), _num(v["before"]), _num(v["after"])] for a, v in geo["max_abs_cos_to_locks"].items()
        ]
        body += "<h3>Largest |cosine| to a locked axis</h3>" + _table(["axis", "before", "after"], rows)
    section("geometry", "Axis geometry", body)

    # ---- correlations
    body = (
        "<p>Pearson correlation (phi coefficient) of the binary labels (logit &gt; 0) over the "
        f"{cor['n_generated']:,} generated samples. Correlated labels are why raw axes are entangled.</p>"
        + figs.img("correlation_generated", "label correlation of generated samples")
    )
    if "data" in cor:
        body += (
            f"<p>The labelled data set ({cor['n_data']:,} images) on the {len(cor['common_attributes'])} shared "
            f"attributes: mean |difference| {_num(cor['mean_abs_difference'])}, largest "
            f"{_num(cor['max_abs_difference'])}.</p>"
            + figs.img("correlation_data", "label correlation of the labelled data")
            + figs.img("correlation_difference", "difference of label correlations")
        )
        rows = [
            [_esc(a), _pct(freq.get(a)), _pct(cor["data_frequency"].get(a))] for a in cor["common_attributes"]
        ]
        body += "<h3>Positive rates</h3>" + _table(["attribute", "generated", "data"], rows)
    section("correlations", "Attribute correlations", body)

    # ---- edit effect
    if eff:
        names = eff["axes"]
        steps = eff["steps"]
        body = (
            f"<p>Each of {eff['faces']} sampled faces is moved by each step along one axis, regenerated and "
            "classified; the numbers are mean changes of each attribute's probability. The <em>entanglement "
            "ratio</em> of an axis is the mean |change| of the most affected other attribute divided by the "
            "mean |change| of its own attribute (0 = a clean edit).</p>"
        )
        if "male_change_beard_minus" in eff:
            bm = eff["male_change_beard_minus"]
            verdict = (
                '<span class="good">at least halved</span>'
                if bm["at_least_halved"]
                else '<span class="bad">not halved</span>'
            )
            body += (
                f"<h3>Beard &minus; with and without Male locked</h3><p>Moving along the Beard axis by "
                f"{bm['step']:+g} changes P(Male) by {_num(bm['unlocked'], 3, True)} on average; with Male "
                f"locked, by {_num(bm['locked'], 3, True)}: the side effect is {verdict} "
                f"(reduction {_pct(bm['reduction'])}). P(Beard) changes by "
                f"{_num(bm.get('beard_change_unlocked'), 3, True)} and "
                f"{_num(bm.get('beard_change_locked'), 3, True)}.</p>"
                + figs.img(
                    "beard_minus_lock_male",
                    "Beard removed along the raw axis (top) and with Male locked (bottom)",
                )
            )
            grid = bm.get("grid")
            if grid:
                body += _table(
                    ["Beard amount"] + [_amount(a) for a in grid["amounts"]],
                    [
                        ["P(Male), free"] + [_num(v) for v in grid["male_probability_unlocked"]],
                        ["P(Male), Male locked"] + [_num(v) for v in grid["male_probability_locked"]],
                    ],
                )
        body += "<h3>Entanglement per axis</h3>" + figs.img("entanglement", "entanglement ratio per axis")
        header = (
            ["axis"]
            + [f"target change ({s:+g})" for s in steps]
            + ["most affected other (unlocked)", "ratio"]
        )
        if locks:
            header += ["most affected other (locked)", "ratio, locked"]
        rows = []
        for a in names:
            u = eff["unlocked"][a]
            tc = u["target_change"] or [None] * len(steps)
            row = [_esc(a)] + [_num(v, 3, True) for v in tc]
            row += [_worst(u), _num(u["ratio"], 2)]
            if locks:
                lk = eff["locked"].get(a)
                row += [_worst(lk) if lk else "locked", _num(lk["ratio"], 2) if lk else "&ndash;"]
            rows.append(row)
        body += _table(header, rows)
        body += figs.img("edit_change_unlocked", "mean change of every attribute for each axis") + figs.img(
            "edit_change_locked", "the same with locks"
        )
        body += (
            '<h3>Edit grids</h3><div class="pair">'
            + figs.img("edit_grid", "one face moved along each axis")
            + figs.img("edit_grid_locked", "the same face with locks")
            + "</div>"
        )
        section("edits", "Edit effect", body)

    # ---- ground truth
    if truth:
        curve = truth["learning_curve"]
        methods = list(curve["methods"]) if curve else []
        body = (
            "<p>The generator knows its true attribute axes, so each fitted axis can be compared with the "
            "truth (cosine 1 = exact).</p>"
        )
        header = ["attribute", f"axes under test ({_esc(ax['method'])})"]
        if curve:
            header += [f"{_esc(m)}, {curve['sizes'][-1]:,} samples" for m in methods]
        rows = []
        for a, cos in truth["cosine_to_truth"].items():
            row = [_esc(a), _num(cos)]
            if curve and a in curve["attributes"]:
                row += [_num(curve["methods"][m]["per_attribute"][a][-1]) for m in methods]
            rows.append(row)
        body += _table(header, rows)
        if curve:
            body += (
                "<h3>Learning curve</h3><p>Every method refitted on the first <i>k</i> samples of the run "
                "(sample counts up to 100,000, capped at the run size).</p>"
                + figs.img("learning_curve", "cosine to the true axes against the sample count")
            )
            rows = [
                [f"{k:,}"]
                + [
                    _num(curve["methods"][m]["mean"][j]) + " / " + _num(curve["methods"][m]["min"][j])
                    for m in methods
                ]
                for j, k in enumerate(curve["sizes"])
            ]
            body += "<h3>Mean / worst cosine per sample count</h3>" + _table(
                ["samples"] + [_esc(m) for m in methods], rows
            )
            for m, errs in curve["errors"].items():
                for k, msg in errs.items():
                    body += f'<p class="note">{_esc(m)} on {int(k):,} samples could not be fitted: {_esc(msg)}</p>'
        section("truth", "Ground truth", body)

    # ---- method comparison
    methods = comp["methods"]
    body = (
        "<p>Every method fitted on the same samples. <em>accuracy</em> is each finder's own score (GLM: sign "
        "agreement of its linear prediction on all samples; logistic: held-out accuracy; SVM: validation "
        "accuracy on the top/bottom samples), so the columns are not measured on the same points. "
        f"The entanglement ratios come from unlocked edits of the first {comp['edit_faces']} edit faces, the "
        "same faces for every method (fewer than above, so they differ a little from the table of the axes "
        "under test).</p>"
    )
    for m, msg in comp["errors"].items():
        body += f'<p class="note"><b>{_esc(m)}</b> could not be fitted on this run: {_esc(msg)}</p>'
    if methods:
        pairs = list(comp["cosine"])
        header = (
            ["attribute"]
            + [f"{_esc(m)} accuracy" for m in methods]
            + [f"cos {_esc(p.replace('~', ' vs '))}" for p in pairs]
        )
        ent = comp.get("entanglement") or {}
        header += [f"{_esc(m)} ratio" for m in ent]
        rows = []
        for a in comp["attributes"]:
            row = [_esc(a)] + [_pct(_accuracy_of(comp["metrics"][m][a])) for m in methods]
            row += [_num(comp["cosine"][p][a]) for p in pairs]
            row += [_num(ent[m].get(a), 2) for m in ent]
            rows.append(row)
        mean_row = ["<b>mean</b>"] + [
            _pct(_mean(_accuracy_of(comp["metrics"][m][a]) for a in comp["attributes"])) for m in methods
        ]
        mean_row += [_num(comp["mean_cosine"][p]) for p in pairs] + [
            _num(_mean(ent[m].values()), 2) for m in ent
        ]
        rows.append(mean_row)
        body += _table(header, rows)
        body += figs.img("method_angles", "angle between the axes of two methods") + figs.img(
            "method_entanglement", "entanglement per method"
        )
    section("methods", "Method comparison", body)
    if sections.get("unsupervised"):
        section("unsupervised", "Unsupervised directions", _unsupervised_html(sections["unsupervised"]))

    # ---- definitions
    split = round(100 * (1 - svm["val_fraction"]))
    section(
        "definitions",
        "How the numbers are made",
        f"""
<ul>
<li><b>Labels</b> are classifier logits &gt; 0; probabilities are sigmoid(logit).</li>
<li><b>Separability</b>: per attribute, the samples are sorted by score; the top and bottom {_pct(svm["ratio"])}
are split {split}/{100 - split} (seeded) into training and validation sets of a linear SVM; <em>remaining</em> is the
sign agreement of the SVM with the labels on all other samples.</li>
<li><b>Cosines</b> are between unit axes. <b>Disentangling</b> projects an axis onto the orthogonal complement of the
locked axes and renormalises it.</li>
<li><b>Correlation</b> is the Pearson correlation of 0/1 labels (phi); an attribute that never changes has none
(grey cells).</li>
<li><b>Edit effect</b>: for axis <i>a</i> and step <i>s</i>, faces <i>z</i> are moved to <i>z + s u<sub>a</sub></i>
(<i>u<sub>a</sub></i> made orthogonal to the locked axes in the locked variant), regenerated and classified; changes
are averaged over the faces. Entanglement ratio = max over other attributes of mean<sub>s</sub> |change| divided by
mean<sub>s</sub> |change| of the target.</li>
<li><b>Learning curve</b>: each method refitted on the first <i>k</i> samples; cosine of each axis to the
generator's true axis.</li>
</ul>""",
    )

    nav = "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t in toc)
    title = f"tlgan report: {_short_spec(run['generator'])} / {_short_spec(run['classifier'])}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{_esc(title)}</h1>"
        f'<p class="sub">{run["n"]:,} samples &middot; {len(run["attributes"])} attributes &middot; '
        f"axes: {_esc(ax['method'])}</p>"
        f'<nav class="toc"><b>Contents</b><ol>{nav}</ol></nav>' + "".join(parts) + "</main></body></html>\n"
    )


def _unsupervised_html(uns: Mapping[str, Any]) -> str:
    """The unsupervised section: what each finder finds, and per attribute its best component beside the supervised axes."""
    k, ref = uns["n_components"], uns["reference_method"]
    body = (
        f"<p>The first {k} components of each unsupervised finder, named after the attribute each one moves most "
        f"when {uns['faces']} faces are edited along it (purity = that attribute's change over the sum of all "
        f"changes). For each attribute, the component closest in angle to the {_esc(ref)} axis (|cos|), its "
        f"entanglement ratio, and the supervised finders' ratios. By chance alone the best of {k} random "
        f"directions reaches |cos| &asymp; {_num(uns['random_cosine'], 2)}.</p>"
    )
    available = []
    for method, info in uns["methods"].items():
        if not info["available"]:
            body += f'<p class="note"><b>{_esc(method)}</b> is not available for this generator: {_esc(info["reason"])}</p>'
            continue
        available.append(method)
        source = f" ({_esc(info['source'])})" if info.get("source") else ""
        if info.get("isotropic"):
            body += (
                f'<p class="note"><b>{_esc(method)}{source} finds nothing here</b>: every variance of this latent '
                f"space lies within the spread of isotropic noise, so the space has no preferred directions and "
                f"its principal components are arbitrary. The cosines and names below are what random "
                f"directions give, not findings.</p>"
            )
        found = info["found"]
        listed = ", ".join(
            f"{_esc(a)} ({_esc(h[0]['component'])}{'+' if h[0]['sign'] > 0 else '&minus;'}, purity "
            f"{_num(h[0]['purity'], 2)})"
            for a, h in sorted(found.items(), key=lambda x: -x[1][0]["purity"])
        )
        body += (
            f"<p><b>{_esc(method)}</b>{source}: names {len(found)} attribute(s): {listed or 'none'}; "
            f"{len(info['unnamed'])} of {info['n_components']} components move no attribute.</p>"
        )
    if not available:
        return body
    sup = uns.get("supervised", {})
    ent, sup_truth = sup.get("entanglement", {}), sup.get("cosine_to_truth", {})
    has_truth = any("cosine_to_truth" in row for per in uns["attributes"].values() for row in per.values())
    header = ["attribute"] + [f"{_esc(m)} ratio" for m in ent]
    if has_truth:
        header += [f"{_esc(m)} cos truth" for m in sup_truth]
    for m in available:
        header += [f"{_esc(m)} best", f"|cos| to {_esc(ref)}", f"{_esc(m)} ratio", f"{_esc(m)} purity"]
        if has_truth:
            header += [f"{_esc(m)} best |cos| truth"]
    rows = []
    for a, per in uns["attributes"].items():
        row = [_esc(a)] + [_num(ent[m].get(a), 2) for m in ent]
        if has_truth:
            row += [_num(sup_truth[m].get(a)) for m in sup_truth]
        for m in available:
            r = per[m]
            row += [
                f"{_esc(r['component'])}{'+' if r['sign'] > 0 else '&minus;'}",
                _num(r["cosine"]),
                _num(r["entanglement"], 2),
                _num(r["purity"], 2),
            ]
            if has_truth:
                row += [f"{_num(r.get('cosine_to_truth'))} ({_esc(r.get('truth_component', ''))})"]
        rows.append(row)
    return body + _table(header, rows)


def _worst(entry: Mapping[str, Any] | None) -> str:
    """'Male (−0.213)': the other attribute that moved most at the largest step."""
    if not entry or not entry.get("largest_off_target_attribute"):
        return "&ndash;"
    k = max(range(len(entry["largest_off_target"])), key=lambda i: abs(entry["largest_off_target"][i]))
    return (
        f"{_esc(entry['largest_off_target_attribute'][k])} ({_num(entry['largest_off_target'][k], 3, True)})"
    )


def _accuracy_of(metrics: Mapping[str, Any]) -> float | None:
    for key in ("val_accuracy", "accuracy", "val_acc", "holdout_accuracy", "test_accuracy"):
        if metrics.get(key) is not None:
            return metrics[key]
    for key, value in metrics.items():
        if "accuracy" in key and value is not None:
            return value
    return None
