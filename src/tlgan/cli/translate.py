"""`tlgan train translate`, `tlgan translate` and `tlgan toyfaces eval-translate`: instant edits.

InterFaceGAN's second route to editing a real image: an image-to-image network trained on the
generator's own edit pairs, applied in one forward pass without inversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tlgan.cli.align import align_option
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


calibration_images_option = click.option(
    "--calibration-images",
    default=64,
    show_default=True,
    help="Generator images the weight blend is calibrated on (after training, 0: not calibrated).",
)
calibration_points_option = click.option(
    "--calibration-points", default=33, show_default=True, help="Weight blends measured in [0, 1]."
)
blend_option = click.option(
    "--blend",
    type=click.Choice(["weights", "outputs"]),
    default="outputs",
    show_default=True,
    help="How amounts between 0 and the trained one are drawn: the two networks' images mixed (two "
    "forward passes) or their weights blended (one; at the calibrated blend, if the model has one).",
)


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
@click.option(
    "--edited-from",
    type=click.Path(file_okay=False),
    default=None,
    help="Fine-tune both networks of an earlier model of this attribute further (skips the identity phase).",
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
@click.option(
    "--change-weight",
    default=16.0,
    show_default=True,
    help="Weight of the pixels the pair changes in the L1 (0: plain L1).",
)
@click.option(
    "--attribute-weight",
    default=0.0,
    show_default=True,
    help="Pull the classifier's probability of the attribute to the edited image's (0: off).",
)
@click.option(
    "--blur",
    default=1.5,
    show_default=True,
    help="Blur both images of each pair alike by up to this sigma (px), against the generator's texture.",
)
@click.option(
    "--blend-fraction",
    default=0.0,
    show_default=True,
    help="Fraction of edit steps trained at a random blend of the two networks (for continuity).",
)
@click.option(
    "--monotone-weight",
    default=0.0,
    show_default=True,
    help="Hinge keeping the classifier's logit of the attribute rising along the mixed outputs (0: off).",
)
@click.option(
    "--monotone-margin",
    default=0.5,
    show_default=True,
    help="Logits of rise the hinge asks for over the whole edit.",
)
@click.option(
    "--monotone-points",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Mixes per image the hinge holds in order (1: each between the two ends only).",
)
@click.option(
    "--monotone-photos",
    "monotone_photos",
    multiple=True,
    type=click.Path(exists=True),
    help="Unlabelled photos (files or folders, centre-cropped to the generator's resolution) the hinge "
    "also holds on: the kind of image the model will edit. Repeatable.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/ (same settings).")
@calibration_images_option
@calibration_points_option
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
    edited_from,
    batch_size,
    lr,
    width,
    depth,
    feature_weight,
    change_weight,
    attribute_weight,
    blur,
    blend_fraction,
    monotone_weight,
    monotone_margin,
    monotone_points,
    monotone_photos,
    seed,
    checkpoint_every,
    resume,
    calibration_images,
    calibration_points,
    device,
    as_json,
):
    """Train an image-to-image network on the generator's own edit pairs for one attribute.

    Pairs (G(latent), G(latent moved by AMOUNT along the attribute's axis, locks held)) are
    drawn afresh every step. A U-Net first learns the identity, then a copy of it learns the
    translation; `tlgan translate` blends the two by the amount asked for, at the blend
    calibrated after training so that equal steps of the amount draw equal shares of the edit.
    """
    from tlgan.cli.editing import _axes_for
    from tlgan.models import load_classifier, load_generator
    from tlgan.translate import train_translation

    G = load_generator(generator, device)
    F = (
        load_classifier(classifier, device)
        if classifier and feature_weight + attribute_weight + monotone_weight > 0
        else None
    )
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
        change_weight=change_weight,
        attribute_weight=attribute_weight,
        blur=blur,
        blend_fraction=blend_fraction,
        monotone_weight=monotone_weight,
        monotone_margin=monotone_margin,
        monotone_points=monotone_points,
        monotone_images=_monotone_photos(monotone_photos, G.img_resolution, not as_json),
        seed=seed,
        identity_from=identity_from,
        edited_from=edited_from,
        resume=resume,
        checkpoint_every=checkpoint_every,
        device=device,
        progress=not as_json,
        record={
            "generator": generator,
            "axes": axes_path,
            "classifier": classifier,
            **({"monotone_photos": list(monotone_photos)} if monotone_photos else {}),
        },
        calibration_images=calibration_images,
        calibration_points=calibration_points,
    )
    summary = {"out": str(out_dir), "attribute": attribute, "amount": amount, **model.record}
    if as_json:
        print_json(summary)
    else:
        click.echo(
            f"translation model for {attribute} written to {out_dir} ({model.record['train_seconds']:.0f} s)"
        )


def _monotone_photos(inputs: tuple[str, ...], resolution: int, progress: bool):
    """The photos of --monotone-photos as one (M, 3, R, R) uint8 tensor (a quarter of the floats' memory), or None."""
    if not inputs:
        return None
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from tlgan.imaging import decode_rgb

    paths = _photo_paths(inputs)
    images = [
        torch.from_numpy(np.ascontiguousarray(decode_rgb(p, resolution)[0].transpose(2, 0, 1)))
        for p in tqdm(paths, desc="reading photos", disable=not progress)
    ]
    return torch.stack(images)


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
@align_option(
    "ffhq: find the face and cut it out as FFHQ's were (dlib's 68 landmarks; pip install "
    "'tlgan[align]') at the model's resolution, instead of a centre crop."
)
@click.option(
    "--face",
    "face",
    default=None,
    help="With --align ffhq: 'all', 'largest' or N (the N-th from the left) [default: largest].",
)
@click.option(
    "--paste-back",
    "paste_back",
    is_flag=True,
    help="With --align ffhq: also write OUT/NAME.photo.png, the photo with what the translation "
    "changed warped back into it (pixels outside the face square stay the photo's own).",
)
@blend_option
@device_option
@json_option
def translate_cmd(photos, model_dir, amount, out_dir, align, face, paste_back, blend, device, as_json):
    """Edit PHOTO... (files or folders) in one forward pass of a translation model.

    Each photo is centre-cropped and resized to the model's resolution (the generator's), or
    with --align ffhq its faces are aligned as FFHQ's were (OUT/NAME.aligned.png and
    NAME.align.json beside the result; NAME-1, NAME-2, ... for several faces); the result is
    OUT/NAME.png. A photo that cannot be read (or has no face) is reported and skipped; the
    exit status is 1 if any failed.
    """
    from tlgan.translate import load_translation

    if align != "ffhq" and (paste_back or face is not None):
        raise TlganError("--face and --paste-back work on faces found by --align ffhq; add --align ffhq")
    detector = None
    if align == "ffhq":
        from tlgan.cli.align import make_detector

        detector = make_detector()  # the install hint comes before any photo is read
    model = load_translation(model_dir, device)
    if not 0 <= amount / model.amount <= 1:
        click.echo(
            f"note: amount {amount} is outside the trained range [0, {model.amount}]: the {blend} are "
            f"extrapolated linearly",
            err=True,
        )
    rows, failed = _translate_photos(
        _photo_paths(photos),
        model,
        amount,
        Path(out_dir),
        detector,
        face,
        paste_back,
        blend=blend,
        progress=not as_json,
    )
    summary = {
        "model": str(model_dir),
        "attribute": model.attribute,
        "amount": amount,
        "blend": blend,
        "calibrated": model.schedule is not None,
        "align": align,
        "images": rows,
        "failed": failed,
    }
    if as_json:
        print_json(summary)
    else:
        click.echo(f"{len(rows)} image(s) translated by {model.attribute}={amount:+g} into {out_dir}")
    if failed:
        raise SystemExit(1)


def _translate_photos(
    paths, model, amount, out: Path, detector, face, paste_back, *, blend: str = "outputs", progress: bool
):
    """Translate each photo (centre crop, or its aligned faces with ``detector``); (rows, failed)."""
    from tqdm.auto import tqdm

    from tlgan.alignment.files import unique_names
    from tlgan.imaging import read_image, save_image
    from tlgan.translate import translate

    rows, failed = [], []
    for path, name in tqdm(
        list(zip(paths, unique_names(paths), strict=True)), desc="translating", disable=not progress
    ):
        try:
            if detector is None:
                image, notes = read_image(path, model.resolution)
                faces = [(name, image, notes, None)]
            else:
                faces = _aligned_faces(path, name, model.resolution, face, detector)
        except TlganError as exc:
            failed.append({"file": str(path), "error": str(exc)})
            click.echo(f"error: {exc}", err=True)
            continue
        for key, image, notes, aligned in faces:
            edited = translate(image[None], model, amount, blend=blend)[0]
            row = {"file": str(path), "out": str(save_image(edited, out / f"{key}.png")), "notes": notes}
            if aligned is not None:
                row.update(_write_aligned(path, key, edited, aligned, out, paste_back))
            rows.append(row)
    return rows, failed


def _write_aligned(path: Path, key: str, edited, aligned, out: Path, paste_back: bool) -> dict[str, str]:
    """OUT/KEY.aligned.png and KEY.align.json, and with ``paste_back`` OUT/KEY.photo.png; their paths.

    The paste adds the change the network drew (``edited`` (3, R, R) minus the aligned input) to
    the photo, so it keeps its own detail wherever the translation changed nothing.
    """
    import numpy as np
    from PIL import Image

    from tlgan.alignment import paste_back as paste
    from tlgan.alignment import read_photo
    from tlgan.imaging import to_uint8
    from tlgan.io import atomic_path, write_json

    paths = {"aligned": out / f"{key}.aligned.png", "alignment": out / f"{key}.align.json"}
    with atomic_path(paths["aligned"]) as tmp:
        Image.fromarray(aligned.image).save(tmp, format="PNG")
    write_json(paths["alignment"], {**aligned.transform.to_dict(), "aligned_image": paths["aligned"].name})
    if paste_back:
        reference = np.asarray(aligned.image)
        photo = paste(read_photo(path), to_uint8(edited), aligned.transform, reference=reference)
        paths["photo"] = out / f"{key}.photo.png"
        with atomic_path(paths["photo"]) as tmp:
            Image.fromarray(photo).save(tmp, format="PNG")
    return {k: str(v) for k, v in paths.items()}


def _aligned_faces(path: Path, name: str, resolution: int, face, detector):
    """[(key, (3, R, R) image in [-1, 1], notes, AlignedFace)] for the faces ``face`` selects in the photo."""
    import torch

    from tlgan.alignment import align_photo, parse_face, read_photo

    photo = read_photo(path)
    faces = align_photo(
        photo,
        size=resolution,
        face=parse_face(face or "largest"),
        detector=detector,
        label=str(path),
        source=str(Path(path).resolve()),
    )
    out = []
    for found in faces:
        key = name if len(faces) == 1 else f"{name}-{found.transform.face}"
        image = torch.from_numpy(found.image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        t = found.transform
        out.append((key, image, [f"aligned as FFHQ (face {t.face} of {t.faces_found} from the left)"], found))
    return out


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
    "--routes",
    type=click.Choice(["all", "translate"]),
    default="all",
    show_default=True,
    help="translate: the translation alone (no inversion or tuning baselines; minutes, not most of an hour).",
)
@blend_option
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here."
)
@classifier_option
@device_option
@json_option
def eval_translate_cmd(
    models_dir,
    n,
    seed,
    invert_steps,
    tune_steps,
    no_tune,
    routes,
    blend,
    out_path,
    classifier,
    device,
    as_json,
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
        baselines=routes == "all",
        blend=blend,
        progress=not as_json,
    )
    if out_path:
        from tlgan.io import json_safe, write_json

        write_json(out_path, json_safe(result, digits=5))
    if as_json:
        print_json(result)
        return
    for name, entry in result["attributes"].items():
        monotonic = entry["continuity"]["monotonic_fraction"]
        line = f"{name:18s} translate {entry['translate']['psnr_db']:6.2f} dB"
        if "invert_edit" in entry:
            tuned = entry.get("tuned_edit", {}).get("psnr_db")
            line += (
                f"  invert+edit {entry['invert_edit']['psnr_db']:6.2f} dB  tuned+edit "
                f"{'-' if tuned is None else f'{tuned:6.2f} dB'}  {entry['speedup_over_invert_edit']:.0f}x faster"
            )
        loose = entry["continuity"]["monotonic_within_0.01"]
        rises = "-" if monotonic is None else f"{monotonic:.2f} ({loose:.2f} within 0.01)"
        click.echo(line + f"  monotonic {rises}")


@click.command("calibrate-translate")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option(
    "--generator",
    "generator",
    default=None,
    help="The generator the model was trained on [default: the one its translation.json names].",
)
@calibration_images_option
@calibration_points_option
@click.option("--seed", default=None, type=int, help="Of the calibration images [default: the training's].")
@device_option
@json_option
def calibrate_translate_cmd(
    model_dir, generator, calibration_images, calibration_points, seed, device, as_json
):
    """Calibrate the weight blend of a translation model folder (written back into it).

    Measures, on the generator's own images, how much of the edit each weight blend draws, and
    stores the table in MODEL_DIR/translation.json: `tlgan translate --blend weights` then
    applies an amount of a quarter of the trained one at the blend that draws a quarter of the
    edit (the default blend, mixing the outputs, needs no table). Models trained by this
    version are calibrated already; this brings older folders up to date.
    """
    from tlgan.models import load_generator
    from tlgan.translate import load_translation
    from tlgan.translate.schedule import calibrate_translation
    from tlgan.translate.train import calibration_set

    if calibration_images < 1:
        raise TlganError("--calibration-images must be at least 1")
    model = load_translation(model_dir, device)
    spec = generator or model.record.get("generator")
    if not spec:
        raise TlganError(f"{model_dir}: translation.json names no generator; pass --generator")
    settings = model.record.get("settings", {})
    seed = int(settings.get("seed", 0)) if seed is None else seed
    blur = float(settings.get("blur", 0.0))
    images = calibration_set(load_generator(spec, device), calibration_images, seed, blur)
    if images.shape[-1] != model.resolution:
        raise TlganError(
            f"{spec} draws {images.shape[-1]} px images, the model works at {model.resolution} px: "
            f"pass the generator it was trained on (--generator)"
        )
    schedule = calibrate_translation(
        model, images, points=calibration_points, progress=not as_json, info={"seed": seed, "blur": blur}
    )
    model.to("cpu").save(model_dir)
    quarters = {f"{t:g}": round(schedule.blend_at(t), 4) for t in (0.25, 0.5, 0.75)}
    if as_json:
        print_json({"model": str(model_dir), "blend_at_fraction": quarters, **schedule.to_dict()})
    else:
        click.echo(
            f"{model_dir}: calibrated; a quarter, half and three quarters of the edit are drawn at weight "
            f"blends {quarters['0.25']}, {quarters['0.5']}, {quarters['0.75']}"
        )


def register(group: click.Group) -> None:
    group.add_command(translate_cmd)
    group.commands["train"].add_command(train_translate_cmd)
    group.commands["train"].add_command(calibrate_translate_cmd)
    group.commands["toyfaces"].add_command(eval_translate_cmd)
