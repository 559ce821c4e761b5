"""Shared CLI pieces: error handling, option types, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tlgan.errors import TlganError


def run_main(group: click.Group) -> None:
    """Run the CLI; a TlganError becomes a one-line 'error: ...' and exit status 2."""
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TlganError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; finished work is kept (use --resume where the command has it)", err=True)
        sys.exit(130)


def parse_int_list(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (
                    part.split("-", 1)
                    if not part.startswith("-")
                    else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                )
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise TlganError(f"cannot read {text!r} as a list of integers; write it like 0-7,12") from None
    return out


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


device_option = click.option(
    "--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda."
)
generator_option = click.option(
    "--generator",
    "generator",
    default="toyfaces-gan",
    show_default=True,
    help="Registered name, TorchScript file, or path/to/file.py:factory.",
)
classifier_option = click.option(
    "--classifier",
    "classifier",
    default="toyfaces-classifier",
    show_default=True,
    help="Registered name, TorchScript file, path/to/file.py:factory, clip:MODEL (attributes in "
    "words; clip: alone is the bundled toyfaces-clip) or hf-classifier:MODEL.",
)
TEXT_ATTRIBUTES_KEY = "tlgan.text_attributes"


def _remember_text_attributes(ctx: click.Context, param: click.Parameter, value):
    """Keep --attribute / --attributes in the context for :func:`cli_classifier` (no command
    signature has to change to accept them)."""
    if value:
        from tlgan.models.clip import as_prompts, load_prompts

        given = ctx.meta.setdefault(TEXT_ATTRIBUTES_KEY, {})
        parsed = load_prompts(value) if param.name == "attributes_file" else as_prompts(list(value))
        twice = [name for name in parsed if name in given]
        if twice:
            raise TlganError(f"attribute(s) {', '.join(twice)} given twice (--attribute and --attributes)")
        given.update(parsed)
    return value


def text_attribute_options(func=None, effect: str = "Replaces the model's own attributes."):
    """``--attribute "Name=positive|negative"`` (repeatable) and ``--attributes FILE`` (JSON), for
    a ``clip:`` classifier; read them with :func:`given_text_attributes` (or load the classifier with
    :func:`cli_classifier`). ``effect`` ends the help text. A decorator, bare or called:
    ``@text_attribute_options`` or ``@text_attribute_options(effect="...")``."""
    if func is None:
        return lambda f: text_attribute_options(f, effect)
    func = click.option(
        "--attributes",
        "attributes_file",
        type=click.Path(dir_okay=False),
        default=None,
        expose_value=False,
        callback=_remember_text_attributes,
        help="JSON file of attributes in words: {name: {positive, negative, templates}} (clip: classifiers).",
    )(func)
    return click.option(
        "--attribute",
        "attribute",
        multiple=True,
        expose_value=False,
        callback=_remember_text_attributes,
        help="An attribute in words for a clip: classifier, 'Name=positive phrase|negative phrase' "
        "(negative optional); repeatable. " + effect,
    )(func)


def given_text_attributes() -> dict:
    """{name: Prompt} given with --attribute / --attributes to the running command ({} if none)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(TEXT_ATTRIBUTES_KEY, {})) if ctx is not None else {}


def cli_classifier(spec: str, device: str = "cpu"):
    """:func:`tlgan.models.load_classifier` with the command's --attribute / --attributes."""
    from tlgan.models import load_classifier

    return load_classifier(spec, device, attributes=given_text_attributes() or None)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
axes_option = click.option(
    "--axes",
    "axes_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Axes file from `tlgan fit` (default: fitted once for the bundled models and cached).",
)
latent_option = click.option(
    "--latent",
    "latent_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from a saved latent (from `tlgan invert`).",
)


def truncation_options(func):
    """``--truncation PSI`` and ``--truncation-cutoff N``: StyleGAN truncation toward w_avg at load time."""
    func = click.option(
        "--truncation-cutoff",
        "truncation_cutoff",
        type=int,
        default=None,
        help="Truncate only the first N layers of wp (StyleGAN; default: every layer).",
    )(func)
    return click.option(
        "--truncation",
        "truncation_psi",
        type=float,
        default=None,
        help="StyleGAN truncation psi toward w_avg (1 = none, 0.7 is common); recorded in run "
        "manifests and axes files.",
    )(func)


def layers_option(func):
    return click.option(
        "--layers",
        "layers",
        default=None,
        help="Edit only these wp layers, e.g. 0-5 (coarse) or 6-17 (fine); needs axes in w "
        "(default: every layer).",
    )(func)


def parse_layers(text):
    """'0-5' -> [0, ..., 5]; None stays None."""
    return None if text in (None, "") else parse_int_list(text)


ARCH_OPTIONS = ("channel_base", "channel_max", "w_dim", "mapping_layers")


def arch_options(func):
    """``--arch dcgan|stylegan2`` and the StyleGAN2 sizes ``--channel-base --channel-max --w-dim --mapping-layers``."""
    from tlgan.train.stylegan2 import SMALL_ARCH

    for key in reversed(ARCH_OPTIONS):
        func = click.option(
            f"--{key.replace('_', '-')}",
            key,
            type=int,
            default=None,
            help=f"StyleGAN2 only [default: {SMALL_ARCH[key]}].",
        )(func)
    return click.option(
        "--arch",
        type=click.Choice(["dcgan", "stylegan2"]),
        default="dcgan",
        show_default=True,
        help="Generator architecture.",
    )(func)


def arch_kwargs(arch: str, **sizes: int | None) -> dict[str, int] | None:
    """The StyleGAN2 constructor sizes given on the command line, defaults filled in (None for a DCGAN)."""
    from tlgan.train.stylegan2 import SMALL_ARCH

    given = {k: v for k, v in sizes.items() if v is not None}
    if arch != "stylegan2":
        if given:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(given))
            raise TlganError(f"{flags} apply to --arch stylegan2; a DCGAN's size is --width")
        return None
    return {**SMALL_ARCH, **given}


def input_transform_options(func):
    """``--rotate DEG`` and ``--translate X,Y``: StyleGAN3's input transform at load time."""
    func = click.option(
        "--translate",
        "translate",
        default=None,
        help="StyleGAN3: move the image by X,Y in input units (the image spans 1; 1/R is one pixel), "
        "without a latent edit.",
    )(func)
    return click.option(
        "--rotate",
        "rotate",
        type=float,
        default=None,
        help="StyleGAN3: turn the image by DEG degrees (counter-clockwise), without a latent edit.",
    )(func)


def parse_input_transform(rotate: float | None, translate: str | None) -> dict | None:
    """``--rotate`` / ``--translate`` as {"rotate": deg, "translate": [x, y]}, or None when neither is given."""
    if rotate is None and translate is None:
        return None
    try:
        move = [0.0, 0.0] if translate is None else [float(v) for v in translate.split(",")]
    except ValueError:
        move = []
    if len(move) != 2:
        raise TlganError(f"--translate takes X,Y (two numbers, e.g. 0.1,-0.05), not {translate!r}")
    return {"rotate": float(rotate or 0.0), "translate": move}


def input_transform_matrix(transform: dict | None):
    """The 3 x 3 ``input_transform`` option for :func:`parse_input_transform`'s dict (None stays None)."""
    if transform is None:
        return None
    from tlgan.models.stylegan3 import input_transform

    return input_transform(transform["rotate"], transform["translate"])


def parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TlganError(f"cannot read {text!r} as numbers; write them like -3,-1.5,0,1.5,3") from None
