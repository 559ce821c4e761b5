"""Attributes in words on the command line: ``--attribute "Name=positive|negative"`` and
``--attributes FILE`` for the commands that take a ``clip:`` classifier, and ``tlgan fit RUN
--attribute ...``, which adds attributes to a finished CLIP run from its stored embeddings.

The options are declared in :func:`tlgan.cli.common.text_attribute_options` and read with
:func:`tlgan.cli.common.given_text_attributes`; :func:`register` (run after the modules that
define the commands) attaches them to each command in :data:`WORDS_COMMANDS`, and gives ``fit``
its text-attribute path (:func:`fit_words`), so the commands' own signatures stay as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tlgan.cli.common import given_text_attributes, print_json, text_attribute_options
from tlgan.errors import TlganError

log = logging.getLogger(__name__)

#: Commands whose classifier may be ``clip:`` with attributes in words (fit has its own path).
WORDS_COMMANDS = ("sample", "edit", "grid", "report", "serve", "invert")


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


def _with_words(fit: click.Command) -> click.Command:
    """``fit`` with --attribute / --attributes: given, they take :func:`fit_words`'s path."""
    base = fit.callback

    def callback(**kwargs):
        prompts = given_text_attributes()
        if not prompts:
            return base(**kwargs)
        from tlgan.cli.common import parse_int_list

        if kwargs.get("name_directions") or kwargs.get("export_boundaries"):
            raise TlganError("--attribute cannot be combined with --name-directions or --export-boundaries")
        finder_kwargs = {
            k: v
            for k, v in {
                "ratio": kwargs["ratio"],
                "target": kwargs["target"],
                "n_components": kwargs["n_components"],
                "layers": parse_int_list(kwargs["layers"]) if kwargs["layers"] else None,
            }.items()
            if v is not None
        }
        axes, written = fit_words(
            kwargs["run_dir"], prompts, kwargs["method"], kwargs["out"], kwargs["device"], finder_kwargs
        )
        if kwargs["as_json"]:
            print_json(
                {
                    "out": kwargs["out"],
                    "method": axes.method,
                    "added": axes.attributes,
                    "attributes": written.attributes,
                    "space": axes.space,
                    "axes": axes.metrics,
                }
            )
            return None
        click.echo(
            f"added {', '.join(axes.attributes)} to {kwargs['run_dir']}; {kwargs['out']} holds "
            f"{len(written.attributes)} axes"
        )
        return None

    command = click.Command(
        fit.name,
        params=list(fit.params),
        callback=callback,
        help=(fit.help or "")
        + "\n\nWith --attribute / --attributes (a run sampled with a clip: classifier): add those attributes "
        "in words to RUN_DIR, scored from its stored image embeddings (no image is generated), fit their "
        "axes and merge them into --out when it exists.",
        short_help=fit.short_help,
    )
    return text_attribute_options(
        command, "Added to RUN_DIR (sampled with clip:), scored from its stored embeddings."
    )


def register(group: click.Group) -> None:
    for name in WORDS_COMMANDS:
        if name in group.commands:
            text_attribute_options(group.commands[name])  # appends the two options to its params
    if "fit" in group.commands:
        group.add_command(_with_words(group.commands["fit"]))
