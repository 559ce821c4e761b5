"""`tlgan invert` and `tlgan toyfaces eval-inversion`: images back to latents (`tlgan train encoder`,
the encoder that gives the inversion its first guess, is in :mod:`tlgan.cli.encoder`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import torch

from tlgan.cli.align import LICENCE_NOTE, invert_editor, invert_options, photos_for_inversion, save_aligned
from tlgan.cli.common import (
    classifier_option,
    device_option,
    generator_option,
    json_option,
    print_json,
    text_attribute_options,
)
from tlgan.errors import TlganError
from tlgan.inversion.optimize import DEFAULT_STEPS

log = logging.getLogger(__name__)

NONE_WORDS = ("none", "")


def _optional_classifier(spec: str | None, device: str, required: bool = False):
    from tlgan.cli.common import cli_classifier

    if not required and (spec is None or spec.lower() in NONE_WORDS):
        return None
    return cli_classifier(spec, device)


encoder_option = click.option(
    "--encoder",
    "encoder_spec",
    default="auto",
    show_default=True,
    help="'auto' (the generator's own encoder), 'none', or a folder with encoder.json.",
)
steps_option = click.option(
    "--steps", default=DEFAULT_STEPS, show_default=True, help="Optimisation steps at most."
)


def _encoder_for(encoder_spec: str, generator_spec: str, generator, device: str):
    """``--encoder``: "auto" (the generator's own, if any), "none", or a folder with encoder.json."""
    from tlgan.inversion.encoder import load_encoder

    if encoder_spec.lower() in NONE_WORDS:
        return None
    if encoder_spec == "auto":
        encoder = load_encoder(generator_spec, generator=generator, device=device)
        if encoder is None:
            log.warning(
                "generator %r has no encoder; starting from the best of random latents in z, or from w_avg in "
                "w and wp (slower, worse); "
                "train one with `tlgan train encoder`",
                generator_spec,
            )
        return encoder
    if not Path(encoder_spec).is_dir():
        raise TlganError(
            f"--encoder {encoder_spec!r}: not a folder; give the folder holding encoder.json, "
            f"'auto' or 'none'"
        )
    encoder = load_encoder(encoder_spec, generator=generator, device=device)
    if encoder is None:
        raise TlganError(
            f"--encoder {encoder_spec!r}: the folder holds no encoder.json; give the folder an encoder "
            f"was saved to (`tlgan train encoder --out`), 'auto' or 'none'"
        )
    return encoder


def _unique_stems(paths: list[str]) -> list[str]:
    """Output names from file stems; repeated stems get -2, -3, ... so no output overwrites another."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


# Generators of the toyfaces world, whose own classifier gives the feature loss when none is named.
TOYFACES_GENERATORS = ("toyfaces-gan", "toyfaces-render", "toyfaces-style", "toyfaces-style-aniso")


def _feature_classifier(spec: str, generator_spec: str, device: str):
    """``--classifier`` of `tlgan invert`: "auto" is the bundled classifier for the bundled generators
    and none for any other (a classifier of another world would pull the photo toward that world)."""
    from tlgan.inversion.tune import tuned_base

    if spec == "auto":
        base = tuned_base(generator_spec) or generator_spec
        if base in TOYFACES_GENERATORS:
            spec = "toyfaces-classifier"
        else:
            log.info(
                "no --classifier named for generator %r: the loss is pixels + image gradients "
                "(name one with --classifier to add its features)",
                generator_spec,
            )
            return None
    return _optional_classifier(spec, device)


def _space_for(space: str, generator) -> str:
    if space == "auto":
        return "wp" if "wp" in generator.spaces else "z"
    generator.check_space(space)
    return space


space_option = click.option(
    "--space",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "z", "w", "wp"]),
    help="Latent space to search: wp (W+, one w per layer) for StyleGAN2, z otherwise ('auto').",
)
tune_options = [
    click.option(
        "--tune",
        is_flag=True,
        help="Pivotal tuning: fine-tune a copy of the generator around the latent "
        "found, saved as OUT/NAME-generator/ (use it with --generator).",
    ),
    click.option("--tune-steps", default=100, show_default=True, help="Tuning steps at most (with --tune)."),
    click.option(
        "--tune-lr", default=1e-3, show_default=True, help="Adam learning rate of the tuning (with --tune)."
    ),
    click.option(
        "--locality-weight",
        default=1.0,
        show_default=True,
        help="Weight of the term keeping faces near the latent as the original generator draws them.",
    ),
    click.option(
        "--locality-radius",
        default=3.0,
        show_default=True,
        help="How far from the latent (in edit units) the locality term reaches.",
    ),
]


def _with(options):
    def wrap(func):
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


@click.command("invert", epilog=LICENCE_NOTE)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for NAME.safetensors (latent) and NAME.png (reconstruction) per image.",
)
@generator_option
@click.option(
    "--classifier",
    "classifier",
    default="auto",
    show_default=True,
    help="Classifier whose features enter the loss: 'auto' (the bundled one for the bundled generators, "
    "else none), 'none', or a spec.",
)
@encoder_option
@steps_option
@space_option
@click.option(
    "--crop",
    "crop",
    default=None,
    help="Crop box x,y,w,h in pixels before the centre square "
    "(default: the centre square of the whole image).",
)
@_with(invert_options)
@click.option(
    "--optimize-noise",
    "optimize_noise",
    is_flag=True,
    help="Also optimise StyleGAN2's noise maps per image (needs --tune, which stores them).",
)
@_with(tune_options)
@click.option("--no-optimize", "no_optimize", is_flag=True, help="Encoder guess only (fast, less faithful).")
@click.option(
    "--upscale", default=1, show_default=True, help="Nearest-neighbour upscaling of the saved PNGs."
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the random starts and the tuning samples."
)
@text_attribute_options
@device_option
@json_option
def invert_cmd(
    images,
    out_dir,
    generator,
    classifier,
    encoder_spec,
    steps,
    space,
    crop,
    align,
    face,
    optimize_noise,
    tune,
    tune_steps,
    tune_lr,
    locality_weight,
    locality_radius,
    tune_storage,
    no_optimize,
    upscale,
    seed,
    device,
    as_json,
    **edit_options,
):
    """Find latents whose generated faces reproduce IMAGE... (files or folders; any size and mode;
    centre-cropped and resized, or aligned as FFHQ's faces with --align ffhq).

    With --tune each photo also gets its own tuned copy of the generator (OUT/NAME-generator/),
    which reproduces it far more faithfully; edit with `tlgan edit --generator OUT/NAME-generator
    --latent OUT/NAME.safetensors`. A file that cannot be read is reported and skipped; the
    others are still inverted, and the exit status is 1 if any file failed.
    """
    from tlgan.editing.latent_file import save_latent
    from tlgan.imaging import parse_crop, read_image, save_image
    from tlgan.inversion.optimize import invert
    from tlgan.inversion.tune import save_tuned, tune_generator
    from tlgan.models import load_generator

    G = load_generator(generator, device)
    space = _space_for(space, G)
    box = parse_crop(crop)
    if optimize_noise and not tune:
        raise TlganError(
            "--optimize-noise needs --tune: a latent file holds no noise maps, the tuned generator keeps them"
        )
    if steps < 0 or tune_steps < 0:
        raise TlganError(f"--steps and --tune-steps must be >= 0, not {steps}, {tune_steps}")
    F = _feature_classifier(classifier, generator, device)
    encoder = _encoder_for(encoder_spec, generator, G, device)
    editor = invert_editor(G, generator, device, **edit_options)
    images, names, loaded, failed, aligned, skipped = photos_for_inversion(
        images, _unique_stems, G.img_resolution, Path(out_dir), align=align, face=face, box=box, tune=tune
    )
    for path, name in zip(images, names, strict=True) if align != "ffhq" else ():
        try:
            image, notes = read_image(path, G.img_resolution, crop=box)
        except TlganError as exc:
            failed.append({"file": path, "error": str(exc)})
            click.echo(f"error: {exc}", err=True)
            continue
        for note in notes:
            log.warning("%s: %s", path, note)
        loaded.append((path, name, image, notes))

    results = []
    timing = None
    if loaded:
        batch = torch.stack([image for _, _, image, _ in loaded])
        result = invert(
            G,
            batch,
            encoder=encoder,
            classifier=F,
            optimize=not no_optimize,
            steps=steps,
            space=space,
            optimize_noise=optimize_noise,
            seed=seed,
            progress=not as_json,
        )
        timing = {
            "seconds_per_image": round(result.seconds_per_image, 3),
            "encoder_seconds_per_image": round(result.info["encoder_seconds_per_image"], 3),
            "optimize_seconds_per_image": round(result.info["optimize_seconds_per_image"], 3),
        }
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tune_seconds = []
        for k, (path, name, image, notes) in enumerate(loaded):
            latent_path, png_path = out / f"{name}.safetensors", out / f"{name}.png"
            psnr = round(float(result.psnr_db[k]), 3)
            enc_psnr = None if result.encoder_psnr_db is None else round(float(result.encoder_psnr_db[k]), 3)
            recon = result.reconstructions[k]
            row = {
                "file": path,
                "latent": str(latent_path),
                "reconstruction": str(png_path),
                "space": space,
                "psnr_db": psnr,
                "encoder_psnr_db": enc_psnr,
                "notes": notes,
            }
            extra = save_aligned(aligned[name], out, name) if name in aligned else {}
            row.update(extra)
            if tune:
                stored = {"storage": tune_storage, "base": G, "pivot": result.latents[k], "target": image}
                noise = None if result.noise is None else {n: v[k] for n, v in result.noise.items()}
                # Pixels and edges only: the latent search settled the attributes, and it is faster.
                tuned = tune_generator(
                    G,
                    image,
                    result.latents[k],
                    space=space,
                    steps=tune_steps,
                    lr=tune_lr,
                    locality_weight=locality_weight,
                    locality_radius=locality_radius,
                    noise=noise,
                    seed=seed,
                    progress=not as_json,
                )
                tuned_dir = out / f"{name}-generator"
                save_tuned(tuned, tuned_dir, base_spec=generator, space=space, source=str(path), **stored)
                tune_seconds.append(tuned.seconds)
                recon = tuned.reconstruction
                extra = {**extra, "tuned_generator": str(tuned_dir), "tuned_psnr_db": round(tuned.psnr_db, 3)}
                row.update(extra)
                del tuned  # one tuned copy of the weights at a time
            save_latent(
                latent_path,
                result.latents[k],
                space=space,
                generator=generator,
                source=str(path),
                psnr_db=psnr,
                encoder_psnr_db=enc_psnr,
                steps=result.info.get("steps", 0),
                **extra,
            )
            save_image(recon, png_path, upscale=upscale)
            row.update(editor(row) if editor else {})
            results.append(row)
        if tune_seconds:
            timing["tune_seconds_per_image"] = round(sum(tune_seconds) / len(tune_seconds), 3)
    if as_json:
        print_json(
            {
                "out": out_dir,
                "generator": generator,
                "space": space,
                "images": results,
                "failed": failed,
                "skipped": skipped,
                "classifier": None if F is None else F.name,
                **(timing or {"seconds_per_image": None}),
            }
        )
    else:
        for r in results:
            tuned_text = (
                f", tuned {r['tuned_psnr_db']:.2f} dB -> {r['tuned_generator']}"
                if "tuned_generator" in r
                else ""
            )
            click.echo(
                f"{r['file']}: PSNR {r['psnr_db']:.2f} dB{tuned_text} -> {r['latent']}, {r['reconstruction']}"
            )
        if results:
            click.echo(
                f"{len(results)} inverted ({timing['seconds_per_image']:.2f} s per image"
                + (f", tuning {timing['tune_seconds_per_image']:.2f} s per image" if tune else "")
                + ")"
            )
    if skipped and not as_json:
        click.echo(f"{len(skipped)} face(s) already inverted in {out_dir}: skipped")
    if failed:
        click.echo(f"{len(failed)} of {len(images)} file(s) could not be inverted", err=True)
        sys.exit(1)


@click.command("eval-inversion")
@click.option("--n", "n", default=100, show_default=True, help="Faces of each kind to invert.")
@generator_option
@classifier_option
@encoder_option
@steps_option
@space_option
@_with(tune_options)
@click.option(
    "--edit",
    "edit",
    default=None,
    help="NAME=AMOUNT: apply this edit to each rendered photo's latent and report how the classifier's "
    "probabilities move (e.g. Smiling=2); axes from --axes or fitted once for the generator.",
)
@click.option(
    "--axes", "axes_path", type=click.Path(dir_okay=False), default=None, help="Axes file for --edit."
)
@click.option(
    "--rendered-only", is_flag=True, help="Skip the generated faces (only photos not made by the generator)."
)
@click.option("--no-optimize", "no_optimize", is_flag=True, help="Encoder guess only.")
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the random starts and the tuning samples."
)
@device_option
@json_option
def eval_inversion_cmd(
    n,
    generator,
    classifier,
    encoder_spec,
    steps,
    space,
    tune,
    tune_steps,
    tune_lr,
    locality_weight,
    locality_radius,
    edit,
    axes_path,
    rendered_only,
    no_optimize,
    seed,
    device,
    as_json,
):
    """Invert fresh generated and rendered faces; report PSNR, attribute agreement and time (and tuning, edits)."""
    from tlgan.inversion.evaluate import evaluate_inversion
    from tlgan.models import load_generator

    if n < 1:
        raise TlganError(f"--n must be at least 1, not {n}")
    G = load_generator(generator, device)
    space = _space_for(space, G)
    F = _optional_classifier(classifier, device, required=True)
    encoder = _encoder_for(encoder_spec, generator, G, device)
    axes, move = None, ("Smiling", 2.0)
    if edit is not None:
        from tlgan.cli.editing import _axes_for, parse_moves

        moves = parse_moves([edit])
        if len(moves) != 1:
            raise TlganError(f"--edit takes one NAME=AMOUNT, not {edit!r}")
        move = next(iter(moves.items()))
        axes = _axes_for(axes_path, G, generator, classifier, device)
    tune_kwargs = {
        "steps": tune_steps,
        "lr": tune_lr,
        "locality_weight": locality_weight,
        "locality_radius": locality_radius,
        "seed": seed,
    }
    result = evaluate_inversion(
        G,
        F,
        encoder=encoder,
        n=n,
        steps=steps,
        optimize=not no_optimize,
        space=space,
        seed=seed,
        tune=tune,
        tune_kwargs=tune_kwargs,
        axes=axes,
        edit=move,
        skip_generated=rendered_only,
        progress=not as_json,
    )
    if as_json:
        print_json(result)
        return
    for kind in ("generated", "rendered"):
        if result[kind] is None:
            continue
        click.echo(f"{kind}:")
        for key, value in result[kind].items():
            click.echo(f"  {key:28s} {value}")


def register(group: click.Group) -> None:
    group.add_command(invert_cmd)
    try:
        from tlgan.cli.toyfaces import toyfaces
    except ModuleNotFoundError as exc:
        if exc.name != "tlgan.cli.toyfaces":
            raise
        # Without the toyfaces world there is nothing with known truth to evaluate against.
        log.debug("no toyfaces command group; eval-inversion is not available")
    else:
        toyfaces.add_command(eval_inversion_cmd)
