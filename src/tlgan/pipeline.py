"""The TL-GAN chain as plain functions: fit axes on a run, render edits, the demo job.

The CLI and the web studio call these; each takes its models and options as arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from tlgan.axes import FeatureAxes
from tlgan.axes.finders import default_method
from tlgan.editing.edit import check_axes_for, draw_latents, edit_latents_grid  # noqa: F401 - part of this API
from tlgan.errors import TlganError
from tlgan.evaluation.measure import lock_demo_grid, pick_face
from tlgan.io import cache_dir
from tlgan.models import load_classifier, load_generator
from tlgan.models.base import Generator
from tlgan.sampling import LocalEngine, Run, sample
from tlgan.toyfaces.lock_demo import DEMO_AMOUNTS, LOCK_DEMO

log = logging.getLogger(__name__)


def cosine_to_generator_truth(axes: FeatureAxes, generator: Generator) -> dict[str, float]:
    """{attribute: cosine of its fitted axis to the generator's true axis in ``axes.space``}.

    Only generators that know their true axes (``generator.true_axes``, e.g. toyfaces-render)
    give any; for the others, and for attributes without a true axis, the dict is empty or
    leaves them out. Unlike :func:`tlgan.evaluation.metrics.cosine_to_truth`, which compares two
    axes sets, this asks the generator for the truth.
    """
    truth = generator.true_axes(space=axes.space)
    if truth is None:
        return {}
    out = {}
    for name in axes.attributes:
        if name in truth.attributes:
            out[name] = float(torch.dot(axes[name], truth[name]))
    return out


def fit_axes(
    run: Run,
    method: str | None = None,
    generator: Generator | None = None,
    attributes: Sequence[str] | None = None,
    **finder_kwargs,
) -> FeatureAxes:
    """Fit axes on ``run`` with the finder ``method``: one per attribute, or K components (pca, sefa).

    ``run`` is a :class:`~tlgan.sampling.Run` (latents (N, D) in ``run.space``, scores (N, A));
    the result is :class:`~tlgan.axes.FeatureAxes` with unit vectors (A, D), or (K, D) named
    ``pc0``.. for pca/sefa, in the run's space, with the fit's metrics per axis. ``method`` is
    a registered finder (``tlgan models``: logistic, glm, svm, pca, sefa; None: the default of
    the run's space, :func:`tlgan.axes.finders.default_method`) and
    ``finder_kwargs`` its options (``ratio=`` for svm, ``n_components=`` ...), over the options
    that suit the run's classifier (:func:`~tlgan.axes.finders.score_options`: glm fits a CLIP's
    probability rather than its logit). Finders that
    read the generator (sefa; pca on activations) get ``generator`` and the run's space. When
    ``generator`` knows its true axes, each attribute's metrics gain ``cosine_to_truth``.

    ``attributes`` fits only those of the run's attributes (e.g. ones just added in words with
    :meth:`~tlgan.sampling.Run.add_attributes`); None fits them all.

    Raises TlganError for an unknown method (with close matches), an attribute the run lacks,
    and for what the finder refuses (its options, the samples it is given).
    """
    from tlgan.axes.finders import make_finder, score_options
    from tlgan.registry import unknown_name_message

    latents, scores = run.load()
    names = run.attributes
    if attributes is not None:
        for name in attributes:
            if name not in names:
                raise TlganError(unknown_name_message("attribute", name, names))
        scores = scores[:, [names.index(a) for a in attributes]]
        names = list(attributes)
    method = method or default_method(run.space)
    finder = make_finder(method, **score_options(method, run.classifier, finder_kwargs))
    if finder.uses_generator:
        finder.fit(latents, scores, names, generator=generator, space=run.space)
    else:
        finder.fit(latents, scores, names)
    axes = finder.to_feature_axes(space=run.space, generator=run.generator)
    axes.info.update({"run": str(run.path), "n": run.n, "seed": run.seed, "classifier": run.classifier})
    if run.generator_options:
        axes.info["generator_options"] = run.generator_options
    if generator is not None:
        for name, cos in cosine_to_generator_truth(axes, generator).items():
            axes.metrics.setdefault(name, {})["cosine_to_truth"] = cos
    return axes


def name_run_directions(
    axes: FeatureAxes,
    run: Run,
    generator: Generator | None = None,
    classifier=None,
    *,
    faces: int = 256,
    steps: Sequence[float] = (-2.0, 2.0),
    min_change: float | None = None,
    rename: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> FeatureAxes:
    """:func:`tlgan.evaluation.naming.name_directions` on the first ``faces`` samples of ``run``,
    with the run's own generator and classifier unless given."""
    from tlgan.evaluation.naming import DEFAULT_MIN_CHANGE, name_directions

    if axes.space != run.space:
        raise TlganError(
            f"the axes live in latent space {axes.space!r} but the run was sampled in {run.space!r}"
        )
    if faces < 1:
        raise TlganError(f"faces must be >= 1 (got {faces})")
    generator = (
        generator if generator is not None else load_generator(run.generator, device, **run.generator_options)
    )
    classifier = classifier if classifier is not None else run.load_classifier(device)
    check_axes_for(axes, generator, run.generator)
    latents = run.latents()[:faces]
    return name_directions(
        axes,
        generator,
        classifier,
        latents,
        steps=steps,
        min_change=DEFAULT_MIN_CHANGE if min_change is None else min_change,
        rename=rename,
        device=device,
        progress=progress,
    )


def default_axes_path(
    generator_spec: str,
    classifier_spec: str,
    *,
    method: str,
    n: int,
    seed: int,
    space: str = "z",
    generator_options: dict | None = None,
    attributes: dict | None = None,
) -> Path:
    """Where :func:`default_axes` caches the axes of one generator/classifier pair and settings
    (``attributes``: a CLIP classifier's prompts, {name: Prompt}, named by a hash of them)."""
    tag = "" if space == "z" else f"-{space}"
    tag += "".join(f"-{k}={v}" for k, v in sorted((generator_options or {}).items()))
    if attributes:
        words = json.dumps({a: p.to_json() for a, p in attributes.items()}, sort_keys=True)
        tag += "-prompts=" + hashlib.sha256(words.encode()).hexdigest()[:12]
    safe = lambda text: str(text).replace("/", "_").replace("\\", "_")  # noqa: E731 - specs may be paths
    return (
        cache_dir()
        / "axes"
        / f"{safe(generator_spec)}--{safe(classifier_spec)}--{method}-{n}-{seed}{tag}.safetensors"
    )


def default_axes(
    generator_spec: str = "toyfaces-gan",
    classifier_spec: str = "toyfaces-classifier",
    *,
    n: int = 20_000,
    seed: int = 0,
    method: str | None = None,
    device: str = "cpu",
    space: str = "z",
    generator_options: dict | None = None,
    progress: bool = True,
    attributes: dict | None = None,
) -> FeatureAxes:
    """Axes for a generator/classifier pair in ``space``, fitted once and cached under ``$TLGAN_CACHE``.

    ``generator_options`` (e.g. ``{"truncation_psi": 0.7}``) are passed to :func:`load_generator`;
    ``method`` defaults to the space's (:func:`tlgan.axes.finders.default_method`).
    ``attributes`` ({name: Prompt}) to :func:`load_classifier` (a ``clip:`` classifier's prompts).
    """
    method = method or default_method(space)
    options = {k: v for k, v in (generator_options or {}).items() if v is not None}
    path = default_axes_path(
        generator_spec,
        classifier_spec,
        method=method,
        n=n,
        seed=seed,
        space=space,
        generator_options=options,
        attributes=attributes,
    )
    if path.is_file():
        return FeatureAxes.load(path)
    log.info("no axes given: sampling %d faces and fitting %s axes once (cached in %s)", n, method, path)
    generator = load_generator(generator_spec, device, **options)
    classifier = load_classifier(classifier_spec, device, attributes=attributes)
    return sample_and_fit_axes(
        generator,
        classifier,
        path,
        n=n,
        seed=seed,
        method=method,
        space=space,
        progress=progress,
        generator_spec=generator_spec,
        classifier_spec=classifier_spec,
        device=device,
    )


def sample_and_fit_axes(
    generator: Generator,
    classifier,
    path: Path,
    *,
    n: int,
    seed: int = 0,
    method: str | None = None,
    space: str = "z",
    progress: bool = True,
    generator_spec: str | None = None,
    classifier_spec: str | None = None,
    device: str | None = None,
) -> FeatureAxes:
    """Sample ``n`` latents of ``generator`` labelled by ``classifier`` into the run folder beside
    ``path`` (``path`` with ``.run``; resumed when it exists), fit ``method`` axes (the space's
    default) on them and save them to ``path``."""
    method = method or default_method(space)
    run_dir = path.with_suffix(".run")
    run = sample(
        generator,
        classifier,
        n,
        run_dir,
        seed=seed,
        space=space,
        engine=LocalEngine(device=device or str(generator.device)),
        resume=run_dir.exists(),
        progress=progress,
        generator_spec=generator_spec or generator.name,
        classifier_spec=classifier_spec or getattr(classifier, "name", "classifier"),
    )
    axes = fit_axes(run, method, generator)
    axes.save(path)
    return axes


def _words_section(out, generator, generator_spec, n, seed, space, face_seed, device, progress) -> dict:
    """The demo's knob from words, or why it was left out (no transformers, a fit refused)."""
    from tlgan.toyfaces.words_demo import words_demo

    try:
        return words_demo(
            out,
            generator,
            generator_spec,
            n=min(n, 2000),
            seed=seed,
            space=space,
            face_seed=face_seed,
            device=device,
            progress=progress,
        )
    except TlganError as exc:
        log.warning("the knob from words is left out of the demo: %s", exc)
        return {"skipped": str(exc)}


def run_demo(
    out: str | os.PathLike,
    *,
    n: int = 20_000,
    seed: int = 0,
    method: str | None = None,
    generator_spec: str = "toyfaces-gan",
    classifier_spec: str = "toyfaces-classifier",
    device: str = "cpu",
    face_seed: int = 7,
    report: bool = True,
    progress: bool = True,
    space: str = "z",
    words: bool = True,
) -> dict:
    """The main job: sample, fit, disentangle, edit, (report). Writes into ``out`` and returns a summary.

    ``space`` is where the faces are sampled and the axes fitted (``"w"`` for StyleGAN generators);
    ``method`` defaults to that space's finder (:func:`tlgan.axes.finders.default_method`).
    ``space`` is where the faces are sampled and the axes fitted (``"w"`` for StyleGAN generators).
    ``words`` adds a knob defined in words (:func:`tlgan.toyfaces.words_demo.words_demo`: up to
    2,000 faces scored by the bundled CLIP, one phrase -> axis -> edit grid, in ``out/words``).
    """
    method = method or default_method(space)
    from tlgan.imaging import save_grid

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = load_generator(generator_spec, device)
    classifier = load_classifier(classifier_spec, device)
    run = sample(
        generator,
        classifier,
        n,
        out / "run",
        seed=seed,
        space=space,
        engine=LocalEngine(device=device),
        resume=(out / "run").exists(),
        progress=progress,
        generator_spec=generator_spec,
        classifier_spec=classifier_spec,
    )
    axes = fit_axes(run, method, generator)
    axes.save(out / "axes.safetensors")
    # The studio and `tlgan edit` reuse these axes instead of fitting their own on first use.
    cached = default_axes_path(generator_spec, classifier_spec, method=method, n=n, seed=seed, space=space)
    if not cached.is_file():
        axes.save(cached)

    latent = generator.sample_latents_at([face_seed], seed=seed, space=space)[0]
    steps = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    grids = out / "grids"
    for name in axes.attributes:
        images = draw_latents(generator, edit_latents_grid(latent, axes, [name], steps), space)
        save_grid(images, grids / f"{name}.png", nrow=len(steps), upscale=2)

    # The toy world's locking demonstration: remove a beard with and without Male held fixed.
    moved, locked = LOCK_DEMO
    lock_demo = {}
    if {moved, locked} <= set(axes.attributes):
        # Start from a face that has the attribute, so that moving it down has something to remove.
        latents, scores = run.load()
        face = latents[pick_face(scores, run.attributes, {moved: True, locked: True})]
        images, p_lock = lock_demo_grid(generator, classifier, axes, face, LOCK_DEMO, DEMO_AMOUNTS)
        save_grid(images, out / "beard_minus_lock_male.png", nrow=len(DEMO_AMOUNTS), upscale=2)
        half = len(DEMO_AMOUNTS)
        lock_demo = {
            "male_probability_unlocked": [round(float(v), 3) for v in p_lock[:half]],
            "male_probability_locked": [round(float(v), 3) for v in p_lock[half:]],
        }

    summary = {
        "seconds": None,
        "samples": run.n,
        "method": method,
        "space": space,
        "generator": generator_spec,
        "classifier": classifier_spec,
        "axes": {
            a: {
                k: v if isinstance(v, int) else round(float(v), 4) for k, v in axes.metrics.get(a, {}).items()
            }
            for a in axes.attributes
        },
        "beard_minus_with_male_locked": lock_demo,
        "outputs": {"axes": "axes.safetensors", "grids": "grids/", "lock_demo": "beard_minus_lock_male.png"},
    }
    if words:
        summary["words"] = _words_section(
            out / "words", generator, generator_spec, n, seed, space, face_seed, device, progress
        )
    if report:
        try:
            from tlgan.evaluation.report import write_report
        except ImportError:
            log.warning("the evaluation report is not available in this build; skipping it")
        else:
            write_report(
                run,
                axes,
                out / "report",
                locks=[locked],
                generator=generator,
                classifier=classifier,
                progress=progress,
                lock_demo=LOCK_DEMO,
            )
            summary["outputs"]["report"] = "report/report.html"
    summary["seconds"] = round(time.perf_counter() - start, 2)
    from tlgan.io import write_json

    write_json(out / "summary.json", summary)
    return summary
