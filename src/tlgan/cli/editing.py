"""`tlgan edit | grid`: moving a face along feature axes and drawing it, from the command line."""

from __future__ import annotations

import re

import click
import torch

from tlgan.cli.common import (
    axes_option,
    classifier_option,
    device_option,
    generator_option,
    input_transform_matrix,
    input_transform_options,
    json_option,
    latent_option,
    layers_option,
    parse_floats,
    parse_input_transform,
    parse_layers,
    print_json,
    text_attribute_options,
    truncation_options,
)
from tlgan.errors import TlganError

ATTR_MOVE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


def parse_moves(values: tuple[str, ...]) -> dict:
    """('Smiling=+2', 'Beard=-1.5') -> {'Smiling': 2.0, 'Beard': -1.5}."""
    moves = {}
    for text in values:
        m = ATTR_MOVE.match(text)
        if not m:
            raise TlganError(f"cannot read --attr {text!r}; write it as NAME=AMOUNT, e.g. --attr Smiling=+2")
        moves[m.group(1)] = moves.get(m.group(1), 0.0) + float(m.group(2))
    return moves


def _start_latent(generator, seed: int, latent_file: str | None, axes, layers):
    """The face to edit and the space to edit it in: (latent, space).

    From ``latent_file`` (any space; a z or w latent is mapped forward to the axes' space) or
    sample ``seed`` in the axes' space. With ``layers``, or a wp latent, the edit happens in wp.
    """
    from tlgan.editing.latent_file import load_latent

    if latent_file:
        latent, meta = load_latent(latent_file)
        space = meta.get("space", "z")
    else:
        latent, space = generator.sample_latents_at([seed], seed=0, space=axes.space)[0], axes.space
    target = "wp" if (layers is not None or space == "wp") else axes.space
    if target == "wp" and axes.space != "w":
        raise TlganError(
            f"editing wp layers needs axes fitted in w; these axes are in {axes.space!r}"
            + (f" and {latent_file} holds a wp latent" if space == "wp" else "")
        )
    with torch.inference_mode():
        latent = generator.map_latents(latent, space, target)[0].float().cpu().clone()
    return latent, target


def _axes_for(axes_path: str | None, generator, generator_spec: str, classifier_spec: str, device: str):
    from tlgan.axes import FeatureAxes
    from tlgan.cli.common import given_text_attributes
    from tlgan.pipeline import default_axes

    if axes_path:
        return FeatureAxes.load(axes_path)
    from tlgan.inversion.tune import tuned_base

    # A generator tuned for one photo (`tlgan invert --tune`) edits with its original's axes.
    generator_spec = tuned_base(generator_spec) or generator_spec
    return default_axes(
        generator_spec,
        classifier_spec,
        device=device,
        space=generator.default_space,
        # StyleGAN3's input transform turns and moves the view, not the face: axes are shared.
        generator_options={k: v for k, v in generator.options.items() if k != "input_transform"},
        attributes=given_text_attributes() or None,
    )


def _with_paste_options(func):
    from tlgan.cli.align import paste_options

    for option in reversed(paste_options):
        func = option(func)
    return func


@click.command("edit")
@generator_option
@truncation_options
@input_transform_options
@axes_option
@classifier_option
@click.option("--seed", type=int, default=0, help="Face to start from (ignored with --latent).")
@latent_option
@click.option(
    "--attr", "moves", multiple=True, help="NAME=AMOUNT, repeatable: --attr Smiling=+2 --attr Beard=-1.5"
)
@click.option("--lock", "locks", multiple=True, help="Attribute to hold fixed, repeatable.")
@layers_option
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@click.option("--upscale", type=int, default=4, help="Nearest-neighbour upscaling of the saved image.")
@click.option(
    "--save-latent", type=click.Path(dir_okay=False), default=None, help="Also save the edited latent."
)
@_with_paste_options
@text_attribute_options
@device_option
@json_option
def edit_cmd(
    generator,
    truncation_psi,
    truncation_cutoff,
    rotate,
    translate,
    axes_path,
    classifier,
    seed,
    latent_file,
    moves,
    locks,
    layers,
    out,
    upscale,
    save_latent,
    paste_back,
    paste_mode,
    device,
    as_json,
):
    """Apply several attribute moves at once to one face and write the image."""
    from tlgan.editing.edit import check_axes_for, draw_latents, edit_latents
    from tlgan.editing.latent_file import save_latent as write_latent
    from tlgan.imaging import save_image
    from tlgan.models import load_generator

    amounts = parse_moves(moves)
    if not amounts:
        raise TlganError("nothing to do: give at least one --attr NAME=AMOUNT")
    layers = parse_layers(layers)
    transform = parse_input_transform(rotate, translate)
    G = load_generator(
        generator,
        device,
        truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff,
        input_transform=input_transform_matrix(transform),
    )
    axes = _axes_for(axes_path, G, generator, classifier, device)
    check_axes_for(axes, G, generator)
    latent, space = _start_latent(G, seed, latent_file, axes, layers)
    edited = edit_latents(latent, axes, amounts, list(locks), space=space, layers=layers)
    image = draw_latents(G, edited[None], space)[0]
    if paste_back:
        from tlgan.cli.align import paste_edit

        reference = draw_latents(G, latent[None], space)[0] if paste_mode == "change" else None
        paste_edit(latent_file, image, reference, out)
    else:
        save_image(image, out, upscale=upscale)
    if save_latent:
        write_latent(
            save_latent,
            edited,
            space=space,
            generator=generator,
            edits=amounts,
            locks=list(locks),
            layers=layers,
            **({"input_transform": transform} if transform else {}),
        )
    if as_json:
        report = {"out": out, "space": space, "amounts": amounts, "locks": list(locks), "layers": layers}
        print_json({**report, **({"input_transform": transform} if transform else {})})
    else:
        click.echo(f"wrote {out}")


@click.command("grid")
@generator_option
@truncation_options
@input_transform_options
@axes_option
@classifier_option
@click.option("--seed", type=int, default=0, help="Face to start from (ignored with --latent).")
@latent_option
@click.option("--attrs", default=None, help="Comma-separated rows (default: every attribute).")
@click.option("--steps", default="-3,-2,-1,0,1,2,3", help="Comma-separated step sizes (columns).")
@click.option("--lock", "locks", multiple=True, help="Attribute to hold fixed, repeatable.")
@layers_option
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@click.option(
    "--gif",
    "gif",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write an animated GIF along the first attribute.",
)
@click.option("--upscale", type=int, default=2)
@text_attribute_options
@device_option
def grid_cmd(
    generator,
    truncation_psi,
    truncation_cutoff,
    rotate,
    translate,
    axes_path,
    classifier,
    seed,
    latent_file,
    attrs,
    steps,
    locks,
    layers,
    out,
    gif,
    upscale,
    device,
):
    """A PNG grid: rows of attributes x columns of steps (and optionally a GIF along one axis)."""
    from tlgan.editing.edit import check_axes_for, draw_latents, edit_latents_grid
    from tlgan.imaging import save_gif, save_grid
    from tlgan.models import load_generator

    layers = parse_layers(layers)
    G = load_generator(
        generator,
        device,
        truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff,
        input_transform=input_transform_matrix(parse_input_transform(rotate, translate)),
    )
    axes = _axes_for(axes_path, G, generator, classifier, device)
    check_axes_for(axes, G, generator)
    latent, space = _start_latent(G, seed, latent_file, axes, layers)
    rows = [a.strip() for a in attrs.split(",")] if attrs else axes.attributes
    for name in rows:
        axes.index(name)
    step_values = parse_floats(steps)
    grid = edit_latents_grid(latent, axes, rows, step_values, list(locks), space=space, layers=layers)
    save_grid(draw_latents(G, grid, space), out, nrow=len(step_values), upscale=upscale)
    click.echo(f"wrote {out} ({len(rows)} attributes x {len(step_values)} steps)")
    if gif:
        lo, hi = min(step_values), max(step_values)
        path = [lo + (hi - lo) * i / 23 for i in range(24)]
        frames = edit_latents_grid(
            latent, axes, rows[:1], path + path[::-1], list(locks), space=space, layers=layers
        )
        save_gif(draw_latents(G, frames, space), gif, upscale=upscale * 2)
        click.echo(f"wrote {gif}")


def register(group: click.Group) -> None:
    group.add_command(edit_cmd)
    group.add_command(grid_cmd)
