"""`tlgan fit RUN --attribute "Name=positive|negative"`: attributes in words added to a finished
CLIP run from its stored embeddings, and their axes fitted.

The options themselves (:func:`tlgan.cli.common.text_attribute_options`, read with
:func:`tlgan.cli.common.given_text_attributes`) are declared on every command that takes a
``clip:`` classifier; ``fit`` hands them here.
"""

from __future__ import annotations

from pathlib import Path

import click

from tlgan.cli.common import print_json
from tlgan.errors import TlganError


def fit_words(run_dir: str, prompts: dict, method: str | None, out: str, device: str, finder_kwargs: dict):
    """Add ``prompts`` to the run, fit their axes with ``method`` and write (or merge into) ``out``.

    Everything that can be refused is checked before anything is written: a run without
    embeddings, a name the run or the axes file already has, an empty or too long phrase, an
    unsupervised finder, an axes file of another space. If fitting fails, the run's added
    attributes are restored to what they were. Returns (axes fitted, axes written).
    """
    from tlgan.axes import FeatureAxes
    from tlgan.axes.finders import FINDERS, default_method, make_finder
    from tlgan.models import GENERATORS, load_generator
    from tlgan.pipeline import fit_axes
    from tlgan.sampling import Run
    from tlgan.sampling.text_attributes import FILE, merge_axes, require_embeddings

    run = Run.open(run_dir)
    require_embeddings(run)
    method = method or default_method(run.space)
    FINDERS.check(method)
    if make_finder(method, **finder_kwargs).uses_generator:
        raise TlganError(
            f"--attribute fits one axis per attribute; {method} finds unsupervised components: "
            f"use glm, logistic or svm"
        )
    existing = FeatureAxes.load(out) if Path(out).is_file() else None
    if existing is not None:
        clash = [a for a in prompts if a in existing.attributes]
        if clash:
            raise TlganError(f"{out} already has axes named {', '.join(clash)}; choose other names")
        if existing.space != run.space:
            raise TlganError(f"{out} holds axes in {existing.space!r}, the run is in {run.space!r}")
    generator = (
        load_generator(run.generator, device, **run.generator_options)
        if run.generator in GENERATORS
        else None
    )
    path = run.path / FILE
    before = path.read_bytes() if path.is_file() else None
    names = run.add_attributes(prompts, device=device)
    try:
        axes = fit_axes(run, method, generator, attributes=names, **finder_kwargs)
        written = merge_axes(existing, axes) if existing is not None else axes
    except BaseException:
        _restore(path, before)
        raise
    written.save(out)
    return axes, written


def _restore(path: Path, before: bytes | None) -> None:
    from tlgan.io import atomic_path

    if before is None:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(before)


def fit_words_cmd(
    prompts: dict, run_dir: str, method, out: str, finder_kwargs: dict, device: str, as_json: bool
):
    """`tlgan fit RUN_DIR --attribute ...`: :func:`fit_words`, then its report. ``finder_kwargs``
    are the finder options fit was given (ratio, target, n_components, layers)."""
    axes, written = fit_words(run_dir, prompts, method, out, device, finder_kwargs)
    if as_json:
        print_json(
            {
                "out": out,
                "method": axes.method,
                "added": axes.attributes,
                "attributes": written.attributes,
                "space": axes.space,
                "axes": axes.metrics,
            }
        )
        return
    click.echo(f"added {', '.join(axes.attributes)} to {run_dir}; {out} holds {len(written.attributes)} axes")
