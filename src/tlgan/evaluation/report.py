"""The evaluation report: measure a run and its axes, draw the figures, write HTML + JSON.

``write_report`` writes into ``out_dir``::

    report.html        one self-contained page (figures embedded as base64 PNG, inline CSS, no scripts)
    report.json        every number in the page, plus the summary
    figures/*.png      the figures as separate files

It checks its arguments and loads what is missing, then goes through three steps:
measuring (:func:`tlgan.evaluation.measure.measure_report`, a typed result, no I/O), drawing
(:func:`tlgan.evaluation.report_figures.draw_report`, matplotlib) and rendering
(:func:`tlgan.evaluation.report_html.report_page`, a Jinja2 template with autoescaping).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation.measure import Clock, LabelledData, measure_report
from tlgan.evaluation.report_figures import draw_report
from tlgan.evaluation.report_html import report_page
from tlgan.io import atomic_path, json_safe, write_json
from tlgan.models.base import Classifier, Generator
from tlgan.sampling import Run

log = logging.getLogger(__name__)

FORMAT = "tlgan.report/1"
FIGURES = "figures"


def _load_data_labels(data) -> LabelledData:
    """Labels (N, B) bool and names of a labelled CelebA-layout folder (only its attribute file is read).

    ``data`` is a folder path, or an object with ``labels`` (N, B) and ``attributes`` (such as
    :class:`tlgan.data.celeba.CelebAFolder`).
    """
    if hasattr(data, "labels") and hasattr(data, "attributes"):
        return LabelledData(
            torch.as_tensor(data.labels) > 0, list(data.attributes), str(getattr(data, "root", "data"))
        )
    from tlgan.data.celeba import ATTR_FILE, parse_attribute_file

    root = Path(data)
    if not root.is_dir():
        raise TlganError(
            f"{root}: data folder not found; --data takes a CelebA-layout folder holding {ATTR_FILE}"
        )
    table = parse_attribute_file(root / ATTR_FILE)
    return LabelledData(torch.from_numpy(table.values > 0), list(table.attributes), str(root))


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
    lock_demo: tuple[str, str] | None = None,
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
    - ``lock_demo``: (attribute, lock), a locking demonstration to add when both are axes and the
      classifier reads the lock: the change of P(lock) when the attribute is removed, free and with
      the lock held (e.g. :data:`tlgan.toyfaces.lock_demo.LOCK_DEMO`); None leaves it out.

    Returns the summary: ``separability`` {attr: SVM val_accuracy}, ``entanglement`` {attr:
    {ratio, ratio_locked}}, the demonstration under its key (``<lock>_change_<attribute>_minus``),
    ``cosine_to_truth`` (when the generator knows its true axes), ``correlation_mean_abs_difference``
    (with ``data``), ``seconds``, and the paths written.
    """
    from tlgan.editing.edit import check_axes_for
    from tlgan.models import load_generator

    clock = Clock()
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
        classifier = run.load_classifier(device)
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
    labelled = _load_data_labels(data) if data is not None else None
    clock.lap("load")

    result = measure_report(
        run,
        latents,
        scores,
        axes,
        generator,
        classifier,
        locks=locks,
        data=labelled,
        methods=methods,
        unsupervised=unsupervised,
        n_components=n_components,
        edit_faces=edit_faces,
        steps=steps,
        lock_demo=lock_demo,
        device=device,
        progress=progress,
        clock=clock,
    )
    from tlgan.evaluation.words import measure_text_attributes

    result.text_attributes = measure_text_attributes(run, scores, axes)
    figures = draw_report(result, out_dir / FIGURES)
    clock.lap("figures")

    timings = clock.timings
    summary = result.summary()
    timings["total"] = clock.total()
    summary["seconds"] = timings["total"]
    html_path, json_path = out_dir / "report.html", out_dir / "report.json"
    summary["outputs"] = {
        "html": str(html_path),
        "json": str(json_path),
        "figures": [str(out_dir / FIGURES / f"{n}.png") for n in figures],
    }
    page = report_page(result, summary, timings, figures, FIGURES)
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    document = {
        "format": FORMAT,
        "summary": summary,
        "context": result.context.to_dict(),
        "timings": timings,
        **result.sections(),
    }
    if result.text_attributes is not None:
        document["text_attributes"] = result.text_attributes
    write_json(json_path, json_safe(document, digits=5))
    log.info("wrote the report to %s in %.1f s", html_path, timings["total"])
    return json_safe(summary, digits=5)
