"""`tlgan train translate`, `tlgan translate` and `tlgan toyfaces eval-translate`: instant edits.

InterFaceGAN's second route to editing a real image: an image-to-image network trained on the
generator's own edit pairs, applied in one forward pass without inversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tlgan.cli.common import (
    axes_option,
    classifier_option,
    device_option,
    generator_option,
    json_option,
    print_json,
)
from tlgan.errors import TlganError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _axes_with_world_yaw(axes, attribute: str, generator):
    """``axes``, plus the world's yaw axis when ``attribute`` is yaw on a world-latent generator."""
    if attribute != "yaw" or "yaw" in axes.attributes:
        return axes
    from tlgan.toyfaces.translate_eval import with_yaw
    from tlgan.toyfaces.world import shares_world_latents

    if not shares_world_latents(generator):
        raise TlganError(
            "'yaw' is not in the axes file; the world's yaw axis is only known for generators that "
            "draw the toyfaces world's latents (toyfaces-gan, toyfaces-render)"
        )
    return with_yaw(axes)


@click.command("translate")
@generator_option
@axes_option
@classifier_option
@click.option(
    "--attr", "attribute", required=True, help="The attribute to translate (an axis name; 'yaw' on toyfaces)."
)
@click.option("--amount", default=2.0, show_default=True, help="Latent move of the training pairs.")
@click.option(
    "--lock", "locks", multiple=True, help="Attributes held fixed in the training pairs (repeatable)."
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model folder to write."
)
@click.option("--identity-steps", default=600, show_default=True, help="Steps training the identity network.")
@click.option("--edit-steps", default=600, show_default=True, help="Steps fine-tuning the edited copy.")
@click.option(
    "--identity-from",
    type=click.Path(file_okay=False),
    default=None,
    help="Reuse the identity network of an earlier model of this generator (skips the identity phase).",
)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option(
    "--width", default=16, show_default=True, help="Channels at full resolution (64 or more on a GPU)."
)
@click.option("--depth", default=3, show_default=True, help="Stride-2 levels of the U-Net.")
@click.option(
    "--feature-weight", default=0.1, show_default=True, help="Classifier feature loss (0: pixels only)."
)
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/ (same settings).")
@device_option
@json_option
def train_translate_cmd(
    generator,
    axes_path,
    classifier,
    attribute,
    amount,
    locks,
    out_dir,
    identity_steps,
    edit_steps,
    identity_from,
    batch_size,
    lr,
    width,
    depth,
    feature_weight,
    seed,
    checkpoint_every,
    resume,
    device,
    as_json,
):
    """Train an image-to-image network on the generator's own edit pairs for one attribute.

    Pairs (G(latent), G(latent moved by AMOUNT along the attribute's axis, locks held)) are
    drawn afresh every step. A U-Net first learns the identity, then a copy of it learns the
    translation; `tlgan translate` blends the two by the amount asked for.
    """
    from tlgan.cli.editing import _axes_for
    from tlgan.models import load_classifier, load_generator
    from tlgan.translate import train_translation

    G = load_generator(generator, device)
    F = load_classifier(classifier, device) if classifier and feature_weight > 0 else None
    axes = _axes_with_world_yaw(_axes_for(axes_path, G, generator, classifier, device), attribute, G)
    model = train_translation(
        G,
        axes,
        attribute,
        out_dir,
        amount=amount,
        locks=list(locks),
        classifier=F,
        identity_steps=identity_steps,
        edit_steps=edit_steps,
        batch_size=batch_size,
        lr=lr,
        width=width,
        depth=depth,
        feature_weight=feature_weight,
        seed=seed,
        identity_from=identity_from,
        resume=resume,
        checkpoint_every=checkpoint_every,
        device=device,
        progress=not as_json,
        record={"generator": generator, "axes": axes_path, "classifier": classifier},
    )
    summary = {"out": str(out_dir), "attribute": attribute, "amount": amount, **model.record}
    if as_json:
        print_json(summary)
    else:
        click.echo(
            f"translation model for {attribute} written to {out_dir} ({model.record['train_seconds']:.0f} s)"
        )


def _photo_paths(inputs: tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    if not paths:
        raise TlganError("no photos given (the folders hold no .png/.jpg/.webp files)")
    return paths


@click.command("translate")
@click.argument("photos", nargs=-1, required=True, type=click.Path())
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="From `tlgan train translate`.",
)
@click.option("--amount", required=True, type=float, help="How far to move, in the attribute's latent units.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@device_option
@json_option
def translate_cmd(photos, model_dir, amount, out_dir, device, as_json):
    """Edit PHOTO... (files or folders) in one forward pass of a translation model.

    Each photo is centre-cropped and resized to the model's resolution (the generator's),
    translated, and written to OUT/NAME.png. A photo that cannot be read is reported and
    skipped; the exit status is 1 if any failed.
    """
    import torch
    from tqdm.auto import tqdm

    from tlgan.imaging import read_image, save_image
    from tlgan.translate import load_translation, translate

    model = load_translation(model_dir, device)
    if not 0 <= amount / model.amount <= 1:
        click.echo(
            f"note: amount {amount} is outside the trained range [0, {model.amount}]: the weights are "
            f"extrapolated",
            err=True,
        )
    out = Path(out_dir)
    rows, failed = [], []
    for path in tqdm(_photo_paths(photos), desc="translating", disable=as_json):
        try:
            image, notes = read_image(path, model.resolution)
        except TlganError as exc:
            failed.append({"file": str(path), "error": str(exc)})
            click.echo(f"error: {exc}", err=True)
            continue
        edited = translate(image[None], model, amount)[0]
        target = out / f"{path.stem}.png"
        save_image(torch.clamp(edited, -1, 1), target)
        rows.append({"file": str(path), "out": str(target), "notes": notes})
    summary = {
        "model": str(model_dir),
        "attribute": model.attribute,
        "amount": amount,
        "images": rows,
        "failed": failed,
    }
    if as_json:
        print_json(summary)
    else:
        click.echo(f"{len(rows)} photo(s) translated by {model.attribute}={amount:+g} into {out}")
    if failed:
        raise SystemExit(1)


@click.command("eval-translate")
@click.option(
    "--models",
    "models_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="A folder of translation models, one subfolder per attribute.",
)
@click.option("--n", "n", default=100, show_default=True, help="Fresh renders to edit.")
@click.option("--seed", default=0, show_default=True)
@click.option("--invert-steps", default=None, type=int, help="Latent optimisation steps (default: invert's).")
@click.option("--tune-steps", default=None, type=int, help="Pivotal tuning steps (default: tuning's).")
@click.option("--no-tune", is_flag=True, help="Skip the pivotal-tuning baseline.")
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here."
)
@classifier_option
@device_option
@json_option
def eval_translate_cmd(
    models_dir, n, seed, invert_steps, tune_steps, no_tune, out_path, classifier, device, as_json
):
    """Compare translation with invert + edit and tuning + edit against the world's true edits."""
    from tlgan.cli.editing import _axes_for
    from tlgan.models import load_classifier, load_generator
    from tlgan.toyfaces.translate_eval import evaluate_translation, with_yaw
    from tlgan.translate import load_translation

    folders = sorted(p for p in Path(models_dir).iterdir() if (p / "translation.json").is_file())
    if not folders:
        raise TlganError(
            f"{models_dir}: no translation model folders inside (made by `tlgan train translate`)"
        )
    models = {}
    for folder in folders:
        model = load_translation(folder, device)
        models[model.attribute] = model
    specs = {m.record.get("generator") for m in models.values()}
    axes_files = {m.record.get("axes") for m in models.values()}
    if len(specs) != 1 or len(axes_files) != 1:
        raise TlganError("the models were trained on different generators or axes; evaluate them separately")
    generator_spec, axes_path = specs.pop(), axes_files.pop()
    G = load_generator(generator_spec, device)
    F = load_classifier(classifier, device)
    axes = with_yaw(_axes_for(axes_path, G, generator_spec, classifier, device))
    result = evaluate_translation(
        models,
        axes,
        G,
        load_generator("toyfaces-render", device),
        F,
        n=n,
        seed=seed,
        invert_steps=invert_steps,
        tune_steps=tune_steps,
        tune=not no_tune,
        progress=not as_json,
    )
    if out_path:
        from tlgan.io import json_safe, write_json

        write_json(out_path, json_safe(result, digits=5))
    if as_json:
        print_json(result)
        return
    for name, entry in result["attributes"].items():
        tuned = entry.get("tuned_edit", {}).get("psnr_db")
        click.echo(
            f"{name:18s} translate {entry['translate']['psnr_db']:6.2f} dB  invert+edit "
            f"{entry['invert_edit']['psnr_db']:6.2f} dB  tuned+edit "
            f"{'-' if tuned is None else f'{tuned:6.2f} dB'}  {entry['speedup_over_invert_edit']:.0f}x faster"
        )


def register(group: click.Group) -> None:
    group.add_command(translate_cmd)
    group.commands["train"].add_command(train_translate_cmd)
    group.commands["toyfaces"].add_command(eval_translate_cmd)
