"""`tlgan align`: faces cut out of photos the way FFHQ's were, with the transform to paste edits back."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tlgan.cli.common import json_option, print_json
from tlgan.errors import TlganError

log = logging.getLogger(__name__)

LICENCE_NOTE = (
    "The 68-point landmark model (dlib's shape_predictor_68_face_landmarks) was trained on iBUG 300-W, "
    "whose licence excludes commercial use."
)


def align_option(help_text: str):
    """The ``--align none|ffhq`` option, with the help text of the command that takes it."""
    return click.option(
        "--align",
        "align",
        type=click.Choice(["none", "ffhq"]),
        default="none",
        show_default=True,
        help=help_text,
    )


face_option = click.option(
    "--face",
    "face",
    default=None,
    help="Which faces: 'all', 'largest', or N (the N-th from the left) [default: all for align, "
    "largest for invert].",
)


def make_detector(detect_side: int | None = None):
    """The landmark detector, or the TlganError that says how to install it (before any photo is read)."""
    from tlgan.alignment import LandmarkDetector
    from tlgan.alignment.landmarks import DETECT_SIDE

    return LandmarkDetector(detect_side=detect_side or DETECT_SIDE)


@click.command("align", epilog=LICENCE_NOTE)
@click.argument("photos", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for NAME.png (the aligned face) and NAME.align.json (the transform) per face.",
)
@click.option(
    "--size", default=1024, show_default=True, help="Side of the aligned faces in pixels (FFHQ: 1024)."
)
@face_option
@click.option(
    "--detect-side",
    default=640,
    show_default=True,
    help="Larger photos are shrunk to this longer side to find the faces (landmarks use full size).",
)
@json_option
def align_cmd(photos, out_dir, size, face, detect_side, as_json):
    """Align the faces of PHOTO... (files or folders) as FFHQ's were: eyes and mouth from dlib's 68
    landmarks give a rotated square, warped to --size pixels.

    A photo already aligned into OUT with the same --size and --face is skipped, so a rerun
    finishes an interrupted folder. A photo that cannot be read or has no face is reported
    and the others go on; the exit status is 1 if any failed. Needs the align extra:
    pip install 'tlgan[align]'.
    """
    from tqdm.auto import tqdm

    from tlgan.alignment import parse_face
    from tlgan.alignment.files import align_file, done_faces, expand_photos, unique_names

    if size < 8:
        raise TlganError(f"--size must be at least 8 pixels, not {size}")
    face = parse_face(face or "all")
    paths = expand_photos(photos)
    names = unique_names(paths)
    detector = make_detector(detect_side)
    out = Path(out_dir)
    results, failed, skipped = [], [], 0
    bar = tqdm(total=len(paths), desc="aligning", unit="photo", disable=True if as_json else None)
    for path, name in zip(paths, names, strict=True):
        records = done_faces(out, name, size, face, path)
        if records is not None:
            skipped += 1
        else:
            try:
                records = align_file(path, name, out, size=size, face=face, detector=detector)
            except TlganError as exc:
                failed.append({"file": str(path), "error": str(exc)})
                bar.write(f"error: {exc}", file=sys.stderr)
                bar.update(1)
                continue
        results.append({"file": str(path), "faces": records})
        bar.update(1)
    bar.close()
    if as_json:
        print_json({"out": str(out), "size": size, "photos": results, "failed": failed, "skipped": skipped})
    else:
        n_faces = sum(len(r["faces"]) for r in results)
        click.echo(
            f"{n_faces} face(s) from {len(results)} photo(s) -> {out}"
            + (f" ({skipped} already done)" if skipped else "")
        )
    if failed:
        click.echo(f"{len(failed)} of {len(paths)} photo(s) could not be aligned", err=True)
        sys.exit(1)


invert_align_options = [
    align_option(
        "ffhq: find the face and cut it out as FFHQ's were (dlib's 68 landmarks; pip install "
        "'tlgan[align]'), at the generator's resolution; OUT/NAME.aligned.png and NAME.align.json "
        "(for --paste-back) are saved beside the latent, and photos already inverted are skipped."
    ),
    face_option,
    click.option(
        "--tune-storage",
        type=click.Choice(["full", "float16-delta"]),
        default="full",
        show_default=True,
        help="How each tuned generator is stored: every weight, or float16 differences from the base "
        "(half the bytes; loading needs the base generator unchanged).",
    ),
]


def photos_for_inversion(images, stems, resolution: int, out: Path, *, align: str, face, box, tune: bool):
    """`tlgan invert`'s inputs: (files, names, loaded, failed, aligned, skipped).

    Folders are expanded to their photos. Without ``align`` only the names come from ``stems``
    (the caller reads the files); with "ffhq" the photos are aligned here (see
    :func:`align_for_inversion`), repeated stems named -a2, -a3 so they never clash with faces -1, -2.
    """
    from tlgan.alignment.files import expand_photos, unique_names

    paths = expand_photos(images)
    images = [str(p) for p in paths]
    if align != "ffhq":
        if face is not None:
            raise TlganError("--face chooses among the faces found by --align ffhq; add --align ffhq")
        return images, stems(images), [], [], {}, []
    if box is not None:
        raise TlganError("--crop and --align ffhq exclude each other: alignment finds the face itself")
    names = unique_names(paths)
    return (images, names, *align_for_inversion(images, names, resolution, face, out, tune=tune))


def align_for_inversion(
    images: list[str],
    names: list[str],
    resolution: int,
    face,
    out: Path,
    *,
    tune: bool,
    progress: bool = True,
):
    """`tlgan invert --align ffhq`: each photo's faces aligned at the generator's ``resolution``.

    Returns (loaded, failed, aligned, skipped): ``loaded`` (file, name, (3, R, R) image in
    [-1, 1], notes) per face to invert (NAME, or NAME-1, NAME-2, ... for several faces);
    ``failed`` [{"file", "error"}]; ``aligned`` {name: AlignedFace}; ``skipped`` the faces whose
    latent (and with ``tune`` the tuned folder) is already in ``out``.
    """
    import torch
    from tqdm.auto import tqdm

    from tlgan.alignment import align_photo, parse_face, read_photo
    from tlgan.alignment.files import TRANSFORM_SUFFIX

    face = parse_face(face or "largest")
    detector = make_detector()
    loaded, failed, aligned, skipped = [], [], {}, []
    for path, name in tqdm(
        list(zip(images, names, strict=True)),
        desc="aligning",
        unit="photo",
        disable=None if progress else True,
    ):
        try:
            photo = read_photo(path)
            faces = align_photo(
                photo,
                size=resolution,
                face=face,
                detector=detector,
                label=path,
                source=str(Path(path).resolve()),
            )
        except TlganError as exc:
            failed.append({"file": path, "error": str(exc)})
            click.echo(f"error: {exc}", err=True)
            continue
        for found in faces:
            key = name if len(faces) == 1 else f"{name}-{found.transform.face}"
            done = (out / f"{key}.safetensors").is_file() and (out / f"{key}{TRANSFORM_SUFFIX}").is_file()
            if done and (not tune or (out / f"{key}-generator").is_dir()):
                skipped.append({"file": path, "latent": str(out / f"{key}.safetensors")})
                continue
            image = torch.from_numpy(found.image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
            note = f"aligned as FFHQ (face {found.transform.face} of {found.transform.faces_found} from the left)"
            loaded.append((path, key, image, [note]))
            aligned[key] = found
    return loaded, failed, aligned, skipped


def save_aligned(face, out: Path, name: str) -> dict[str, str]:
    """Write ``OUT/NAME.aligned.png`` and ``OUT/NAME.align.json`` beside the latent; the paths, for its metadata."""
    from PIL import Image

    from tlgan.alignment.files import TRANSFORM_SUFFIX
    from tlgan.io import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    image_path, json_path = out / f"{name}.aligned.png", out / f"{name}{TRANSFORM_SUFFIX}"
    with atomic_path(image_path) as tmp:
        Image.fromarray(face.image).save(tmp, format="PNG")
    write_json(json_path, {**face.transform.to_dict(), "aligned_image": image_path.name})
    return {"aligned": str(image_path), "alignment": str(json_path), "photo": str(face.transform.source)}


paste_options = [
    click.option(
        "--paste-back",
        "paste_back",
        is_flag=True,
        help="Write the whole photo with the edited face warped back in (for latents of "
        "`tlgan invert --align ffhq`: the transform NAME.align.json beside the latent says where).",
    ),
    click.option(
        "--paste-mode",
        type=click.Choice(["change", "face"]),
        default="change",
        show_default=True,
        help="With --paste-back: 'change' adds what the edit changed (edited minus unedited face) to the "
        "photo, keeping its own detail; 'face' pastes the generated face itself.",
    ),
]


def paste_edit(latent_file: str | None, image, reference, out: str) -> dict:
    """`--paste-back`: the edited face ``image`` (3, R, R) in [-1, 1] pasted into the photo the latent came from.

    ``reference`` (3, R, R) the unedited face (paste mode "change") or None (mode "face"). The
    transform is ``NAME.align.json`` beside ``latent_file``; the photo is the one it names.
    Writes ``out`` (the full photo, PNG) and returns what the JSON output reports.
    """
    from PIL import Image

    from tlgan.alignment import FaceTransform, paste_back, read_photo
    from tlgan.alignment.files import transform_path
    from tlgan.imaging import to_uint8
    from tlgan.io import atomic_path

    if not latent_file:
        raise TlganError(
            "--paste-back needs --latent from `tlgan invert --align ffhq` (a sampled face has no photo)"
        )
    where = transform_path(latent_file)
    if not where.is_file():
        raise TlganError(
            f"--paste-back: {where} not found; the latent {latent_file} was not made from an aligned photo "
            f"(invert the photo with `tlgan invert PHOTO --align ffhq`)"
        )
    transform = FaceTransform.load(where)
    if not transform.source or not Path(transform.source).is_file():
        raise TlganError(
            f"--paste-back: the photo {transform.source!r} that {where} was aligned from is not there any more; "
            f"put it back (or align it again)"
        )
    photo = read_photo(transform.source)
    face = to_uint8(image)
    pasted = paste_back(photo, face, transform, reference=None if reference is None else to_uint8(reference))
    path = Path(out)
    with atomic_path(path) as tmp:
        Image.fromarray(pasted).save(tmp, format="PNG")
    return {"pasted_back": True, "photo": transform.source, "alignment": str(where)}


invert_edit_options = [
    click.option(
        "--edit",
        "edit_moves",
        multiple=True,
        help="NAME=AMOUNT, repeatable: also edit each inverted face (drawn by its tuned generator with "
        "--tune) and write OUT/NAME.edited.png.",
    ),
    click.option(
        "--axes",
        "edit_axes",
        type=click.Path(dir_okay=False),
        default=None,
        help="Axes file for --edit (default: those of `tlgan edit` for the generator).",
    ),
    *paste_options,
]


invert_options = invert_align_options + invert_edit_options
"""The options `tlgan invert` takes from here: --align, --face, --tune-storage, --edit, --axes, --paste-back/-mode."""


def invert_editor(
    generator, generator_spec: str, device: str, *, edit_moves, edit_axes, paste_back, paste_mode
):
    """`tlgan invert --edit NAME=AMOUNT [--paste-back]`: a function of one result row, or None without --edit.

    It draws the saved latent moved by the edits through the saved (tuned, if any) generator,
    writes ``OUT/NAME.edited.png`` and, with --paste-back, ``OUT/NAME.edited-photo.png`` (the
    photo with the edited face warped back in; the photo must have been aligned), and returns
    the paths for the row.
    """
    from tlgan.cli.editing import _axes_for, _start_latent, parse_moves
    from tlgan.editing.edit import check_axes_for, draw_latents, edit_latents
    from tlgan.imaging import save_image
    from tlgan.models import load_generator

    if not edit_moves:
        if paste_back:
            raise TlganError(
                "--paste-back on `tlgan invert` pastes the --edit NAME=AMOUNT result; add --edit"
            )
        return None
    amounts = parse_moves(edit_moves)
    axes = _axes_for(edit_axes, generator, generator_spec, "toyfaces-classifier", device)
    check_axes_for(axes, generator, generator_spec)

    def apply(row: dict) -> dict:
        G = load_generator(row["tuned_generator"], device) if "tuned_generator" in row else generator
        latent, space = _start_latent(G, 0, row["latent"], axes, None)
        edited = edit_latents(latent, axes, amounts, [], space=space)
        image = draw_latents(G, edited[None], space)[0]
        stem = Path(row["latent"]).with_suffix("")
        out = {"edited": str(save_image(image, f"{stem}.edited.png"))}
        if paste_back:
            reference = draw_latents(G, latent[None], space)[0] if paste_mode == "change" else None
            paste_edit(row["latent"], image, reference, f"{stem}.edited-photo.png")
            out["edited_photo"] = f"{stem}.edited-photo.png"
        return out

    return apply


def register(group: click.Group) -> None:
    group.add_command(align_cmd)
