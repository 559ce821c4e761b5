"""The report's measurements: one function from loaded samples and models to a typed result.

:func:`measure_report` fits the finders, measures separability, geometry, correlations, edit
effects, ground truth, the method comparison and the unsupervised directions, and renders the
edit grids' images; it reads and writes no files (the caller loads the run and the labelled
data, :mod:`tlgan.evaluation.report_figures` draws, :mod:`tlgan.evaluation.report_html` writes
the page). Every measure comes from :mod:`tlgan.evaluation.metrics`; the sections are the plain
dicts those functions return, so that they go to JSON as they are.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation import metrics as M
from tlgan.models.base import Classifier, Generator
from tlgan.sampling import Run

log = logging.getLogger(__name__)

# The method comparison measures the entanglement of every finder's axes on this many of the
# edit faces (the same faces for all), which keeps `tlgan demo` within its time budget: each
# method costs 2 * steps * attributes * faces generator and classifier passes.
METHOD_EDIT_FACES = 16


@dataclass(frozen=True)
class LabelledData:
    """Labels of a labelled data set: ``labels`` (N, B) bool, their ``attributes``, where they came from."""

    labels: torch.Tensor
    attributes: list[str]
    path: str


@dataclass
class EditGrid:
    """A grid of edited faces to draw: ``images`` (rows * cols, 3, H, W) in [-1, 1], row-major."""

    name: str
    images: torch.Tensor
    cols: int
    row_labels: list[str]
    col_labels: list[str]
    title: str
    scale: float | None = None  # screen pixels per image pixel; None: the plot's default


@dataclass
class ReportContext:
    """What was measured: the run, the axes under test and the settings (the JSON's ``context``)."""

    run: dict[str, Any]
    axes: dict[str, Any]
    svm: dict[str, float]
    locks: list[str]
    methods: list[str]
    edit_faces: int
    steps: list[float]
    device: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ReportResult:
    """Everything :func:`measure_report` measured; each section is the dict of its metrics function.

    ``lock_demo`` is the (attribute, lock) pair of the locking demonstration when it was measured
    (its numbers are in ``edit_effect[lock_demo_key]``), ``grids`` the edit grids to draw, and
    ``timings`` seconds per stage.
    """

    context: ReportContext
    separability: dict[str, dict[str, Any]]
    geometry: dict[str, Any]
    correlations: dict[str, Any]
    edit_effect: dict[str, Any] | None
    ground_truth: dict[str, Any] | None
    methods: dict[str, Any]
    unsupervised: dict[str, Any] | None
    lock_demo: tuple[str, str] | None = None
    grids: list[EditGrid] = field(default_factory=list)
    spaces: dict[str, Any] | None = None  # tlgan.evaluation.spaces.SpacesResult.to_dict()
    timings: dict[str, float] = field(default_factory=dict)
    text_attributes: dict[str, Any] | None = None  # a CLIP run's prompts (tlgan.evaluation.words)

    @property
    def lock_demo_key(self) -> str | None:
        return M.lock_demo_key(self.lock_demo) if self.lock_demo else None

    @property
    def lock_demo_result(self) -> dict[str, Any] | None:
        """The demonstration's numbers (see :func:`tlgan.evaluation.metrics.lock_demo_change`), or None."""
        if not self.edit_effect or not self.lock_demo:
            return None
        return self.edit_effect.get(self.lock_demo_key)

    def sections(self) -> dict[str, Any]:
        """The sections as the JSON stores them, in its order."""
        return {
            "separability": self.separability,
            "geometry": self.geometry,
            "correlations": self.correlations,
            "edit_effect": self.edit_effect,
            "ground_truth": self.ground_truth,
            "methods": self.methods,
            "unsupervised": self.unsupervised,
            "spaces": self.spaces,
        }

    def summary(self) -> dict[str, Any]:
        """The headline numbers (without ``seconds`` and ``outputs``, which the writer adds)."""
        names = self.context.run["attributes"]
        effect = self.edit_effect
        out: dict[str, Any] = {
            "separability": {a: self.separability[a]["val_accuracy"] for a in names},
            "remaining_accuracy": {a: self.separability[a]["remaining_accuracy"] for a in names},
            "entanglement": effect["entanglement"] if effect else {},
        }
        if self.lock_demo_result is not None:
            out[self.lock_demo_key] = self.lock_demo_result
        if self.ground_truth is not None:
            out["cosine_to_truth"] = self.ground_truth["cosine_to_truth"]
        if "mean_abs_difference" in self.correlations:
            out["correlation_mean_abs_difference"] = self.correlations["mean_abs_difference"]
        out["max_abs_cos_to_locks"] = self.geometry["max_abs_cos_to_locks"]
        if self.unsupervised is not None:
            from tlgan.evaluation.unsupervised import findings_summary

            out["unsupervised"] = findings_summary(self.unsupervised)
        return out


class Clock:
    """Seconds per stage: ``lap(name)`` records the time since the previous lap."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 2)


def fitted_on(axes: FeatureAxes, run: Run) -> bool:
    """Whether ``axes`` are exactly what refitting their finder with default options on ``run`` gives
    (the defaults for the run's classifier, :func:`~tlgan.axes.finders.score_options`).

    ``tlgan fit`` / ``fit_axes`` record the run, its size and seed, and the finder's options in
    ``axes.info``; when all match, refitting would reproduce the same axes, so they are reused.
    """
    from tlgan.axes.finders import FINDERS, make_finder, score_options

    info = axes.info
    if axes.method not in FINDERS or list(axes.attributes) != list(run.attributes) or not info.get("run"):
        return False
    try:
        same_run = Path(info["run"]).resolve() == run.path.resolve()
    except (OSError, TypeError):
        return False
    if not same_run or info.get("n") != run.n or info.get("seed") != run.seed:
        return False
    defaults = make_finder(axes.method, **score_options(axes.method, run.classifier)).get_params()
    return all(k in info and info[k] == v for k, v in defaults.items())


def pick_face(scores: torch.Tensor, attributes: Sequence[str], want: Mapping[str, bool]) -> int:
    """Index of the first sample whose labels (``scores`` (N, A) logits > 0) match ``want`` (0 when none does)."""
    mask = torch.ones(len(scores), dtype=torch.bool)
    for name, value in want.items():
        if name in attributes:
            mask &= (scores[:, list(attributes).index(name)] > 0) == value
    hits = torch.nonzero(mask).flatten()
    return int(hits[0]) if len(hits) else 0


def grid_steps(steps: Sequence[float]) -> list[float]:
    """Columns of the edit grids: five evenly spaced amounts from -max|step| to +max|step|."""
    top = max(abs(float(s)) for s in steps)
    return [round(top * f, 3) for f in (-1.0, -0.5, 0.0, 0.5, 1.0)]


def amount_label(value: float) -> str:
    """An edit amount for a label: '+1.5', '\u22122', '0'."""
    value = float(value) + 0.0
    return "0" if value == 0 else f"{value:+g}".replace("-", "\u2212")


def lock_demo_grid(
    generator: Generator,
    classifier: Classifier,
    axes: FeatureAxes,
    latent: torch.Tensor,
    pair: tuple[str, str],
    amounts: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One face moved along ``pair[0]`` by each of ``amounts``, free and with ``pair[1]`` locked.

    ``latent`` (D,) in ``axes.space``. Returns the images (2 * len(amounts), 3, H, W), the free
    row first, and P(lock) of each image (2 * len(amounts),) on CPU.
    """
    from tlgan.editing.edit import draw_latents, edit_latents

    attribute, lock = pair
    moved = torch.stack(
        [edit_latents(latent, axes, {attribute: a}) for a in amounts]
        + [edit_latents(latent, axes, {attribute: a}, [lock]) for a in amounts]
    )
    images = draw_latents(generator, moved, axes.space)
    with torch.inference_mode():
        probs = classifier.probabilities(
            images.to(next(iter(classifier.parameters()), torch.empty(0)).device)
        )
    return images, probs[:, classifier.attribute_index(lock)].cpu()


def measure_report(
    run: Run,
    latents: torch.Tensor,
    scores: torch.Tensor,
    axes: FeatureAxes,
    generator: Generator,
    classifier: Classifier,
    *,
    locks: Sequence[str] = (),
    data: LabelledData | None = None,
    methods: Sequence[str] = ("glm", "logistic", "svm"),
    unsupervised: Sequence[str] = ("pca", "sefa"),
    n_components: int = 64,
    edit_faces: int = 64,
    steps: Sequence[float] = (-2.0, 2.0),
    lock_demo: tuple[str, str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    clock: Clock | None = None,
) -> ReportResult:
    """Measure ``axes`` on the samples of ``run``: ``latents`` (N, D) in ``run.space``, ``scores`` (N, A) logits.

    The arguments are :func:`tlgan.evaluation.report.write_report`'s, already checked (``methods``
    supervised finders, ``locks`` axes, ``steps`` finite); ``data`` holds the labels of a labelled
    data set. ``clock`` collects the seconds of each stage. Reads and writes no files.
    """
    from tlgan.axes.finders import score_options

    clock = clock or Clock()
    attributes = run.attributes
    methods, locks, steps = list(methods), list(locks), [float(s) for s in steps]

    # Separability and the method comparison both need every finder fitted on the same samples,
    # each with the options that suit the run's classifier (as `tlgan fit` uses them).
    fit_list = methods + ([] if "svm" in methods else ["svm"])
    options = {m: score_options(m, run.classifier) for m in fit_list}
    fitted = {axes.method: axes} if axes.method in fit_list and fitted_on(axes, run) else {}
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
                M.fit_methods(
                    latents,
                    scores,
                    attributes,
                    [method],
                    space=run.space,
                    generator=run.generator,
                    finder_kwargs=options,
                )
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
    clock.lap("fit")

    geometry = M.axis_geometry(axes, locks)
    if data is not None:
        correlations = M.compare_correlations(scores > 0, attributes, data.labels, data.attributes)
    else:
        correlations = M.compare_correlations(scores > 0, attributes)
    clock.lap("geometry_and_correlation")

    faces = latents[: min(int(edit_faces), len(latents))]
    effect: dict[str, Any] | None = None
    method_entanglement: dict[str, dict[str, Any]] = {}
    if len(faces):
        log.info("edit effect of the axes under test on %d faces, steps %s", len(faces), steps)
        effect = M.edit_effect(
            generator,
            classifier,
            axes,
            faces,
            steps,
            locks,
            device=device,
            progress=progress,
            lock_demo=lock_demo,
        )
        clock.lap("edit_effect")
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
            )
            method_entanglement[method] = m_effect["entanglement"]
        clock.lap("method_edit_effect")

    truth = generator.true_axes(space=axes.space)
    ground_truth = None
    if truth is not None:
        ground_truth = _ground_truth(
            latents, scores, attributes, axes, truth, compared, fitted, options, progress
        )
        clock.lap("learning_curve")
    spaces = _spaces(run, scores, axes, generator, classifier, methods, len(faces), device)
    if spaces is not None:
        clock.lap("spaces")
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
        clock.lap("unsupervised")

    svm_info = fitted["svm"].info if "svm" in fitted else {}
    context = ReportContext(
        run={
            "path": str(run.path),
            "n": run.n,
            "seed": run.seed,
            "generator": run.generator,
            "classifier": run.classifier,
            "space": run.space,
            "latent_dim": int(latents.shape[1]),
            "attributes": list(attributes),
        },
        axes={
            "method": axes.method,
            "generator": axes.generator,
            "attributes": list(axes.attributes),
            "info": axes.info,
            "metrics": axes.metrics,
        },
        svm={
            "ratio": float(svm_info.get("ratio", 0.02)),
            "val_fraction": float(svm_info.get("val_fraction", 0.3)),
        },
        locks=locks,
        methods=methods,
        edit_faces=int(len(faces)),
        steps=steps,
        device=device,
        data={"path": data.path, "n": int(len(data.labels))} if data is not None else None,
    )
    result = ReportResult(
        context=context,
        separability=separability,
        geometry=geometry,
        correlations=correlations,
        edit_effect=effect,
        ground_truth=ground_truth,
        methods=comparison,
        unsupervised=unsupervised_result,
        spaces=spaces,
        lock_demo=tuple(lock_demo) if effect and lock_demo and M.lock_demo_key(lock_demo) in effect else None,
        timings=clock.timings,
    )
    if effect is not None:
        result.grids = _edit_grids(result, axes, generator, classifier, latents, scores)
        clock.lap("edit_grids")
    return result


def _spaces(run, scores, axes, generator, classifier, methods, faces, device) -> dict[str, Any] | None:
    """The section "Latent spaces" (:func:`tlgan.evaluation.spaces.measure_spaces`) for a generator
    that knows its truth in z and w, fitted with the method under test (or w's default); else None."""
    from tlgan.axes.finders import default_method
    from tlgan.evaluation.spaces import measure_spaces, truth_spaces

    if len(truth_spaces(generator)) < 2:
        return None
    method = axes.method if axes.method in methods else default_method("w")
    log.info("the generator knows its truth in z and w: fitting %s in both", method)
    result = measure_spaces(
        run,
        scores,
        generator,
        classifier,
        method=method,
        layer_faces=min(METHOD_EDIT_FACES, faces),
        device=device,
    )
    return result.to_dict() if result is not None else None


def _ground_truth(
    latents, scores, attributes, axes, truth, compared, fitted, options, progress
) -> dict[str, Any]:
    """Cosines of the axes under test to the truth, and every compared method's learning curve
    (each finder with its ``options``)."""
    log.info("the generator knows its true axes: learning curves of %s", ", ".join(compared))
    curve = (
        M.learning_curve(
            latents,
            scores,
            attributes,
            truth,
            compared,
            fitted=fitted,
            finder_kwargs=options,
            progress=progress,
        )
        if compared
        else None
    )
    if curve is not None and "glm" in compared:
        # glm's other regression target beside the one it used: TL-GAN's probability beside the
        # clipped logit (or, on a CLIP run, whose glm fits the probability, the logit).
        glm_options = dict(options.get("glm", {}))
        other = "logit" if glm_options.get("target") == "probability" else "probability"
        label = f"glm ({other} target)"
        variant = M.learning_curve(
            latents,
            scores,
            attributes,
            truth,
            ["glm"],
            finder_kwargs={"glm": {**glm_options, "target": other}},
            progress=progress,
        )
        curve["methods"][label] = variant["methods"]["glm"]
        if variant["errors"]:
            curve["errors"][label] = variant["errors"]["glm"]
    return {"cosine_to_truth": M.cosine_to_truth(axes, truth), "learning_curve": curve}


def _edit_grids(result: ReportResult, axes, generator, classifier, latents, scores) -> list[EditGrid]:
    """The edit grids of sample 0 (free and locked) and of the locking demonstration.

    The demonstration's P(lock) per image is added to its entry in ``result.edit_effect`` as ``grid``.
    """
    from tlgan.editing.edit import draw_latents, edit_latents_grid

    locks, steps = result.context.locks, result.context.steps
    names = result.edit_effect["axes"]
    space = axes.space
    columns = grid_steps(steps)
    col_labels = [amount_label(c) for c in columns]
    face = latents[0]
    grids = [
        EditGrid(
            "edit_grid",
            draw_latents(generator, edit_latents_grid(face, axes, names, columns), space),
            len(columns),
            list(names),
            col_labels,
            "Edits of sample 0 along each axis",
        )
    ]
    if locks:
        # Every row, so that the rows line up with the unlocked grid; a locked axis moved on
        # purpose is kept orthogonal to the other locked ones.
        grids.append(
            EditGrid(
                "edit_grid_locked",
                draw_latents(generator, edit_latents_grid(face, axes, names, columns, locks), space),
                len(columns),
                [f"{a} (locked)" if a in locks else a for a in names],
                col_labels,
                f"The same edits with {', '.join(locks)} locked",
            )
        )
    demo = result.lock_demo_result
    if demo is not None:
        attribute, lock = result.lock_demo
        idx = pick_face(scores, result.context.run["attributes"], {attribute: True, lock: True})
        top = max(abs(s) for s in steps)
        amounts = [0.0] + [-top * f for f in (0.5, 1.0, 1.5)]
        images, probs = lock_demo_grid(generator, classifier, axes, latents[idx], result.lock_demo, amounts)
        demo["grid"] = {
            "sample": idx,
            "amounts": amounts,
            f"{lock.lower()}_probability_unlocked": [float(v) for v in probs[: len(amounts)]],
            f"{lock.lower()}_probability_locked": [float(v) for v in probs[len(amounts) :]],
        }
        grids.append(
            EditGrid(
                f"{attribute}_minus_lock_{lock}".lower(),
                images,
                len(amounts),
                [f"{attribute} \u2212, free", f"{attribute} \u2212, {lock} locked"],
                [amount_label(a) for a in amounts],
                f"Removing the {attribute.lower()} of sample {idx}",
                scale=2.0,
            )
        )
    return grids
