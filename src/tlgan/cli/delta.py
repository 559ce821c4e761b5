"""`tlgan delta train | edit | eval`: learned non-linear edits from a few sequences."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tlgan.cli.common import classifier_option, device_option, generator_option, json_option, print_json
from tlgan.delta.train import DEFAULTS
from tlgan.errors import TlganError

log = logging.getLogger(__name__)


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise TlganError(f"cannot read {option} {text!r}; write numbers like -2,-1,0,1,2") from None
    if not values:
        raise TlganError(f"{option} {text!r} names no value")
    return values


path_degree_option = click.option(
    "--path-degree",
    default=str(DEFAULTS["path_degree"]),
    show_default=True,
    help="Smooth the training sequences' mean path into a polynomial of this degree in the factor value "
    "before learning (0: off; auto: the smallest degree >= 2 that fits it to within the inversions' "
    "wander).",
)


@click.group("delta")
def delta() -> None:
    """Learned edits (Delta-GAN-Encoder): learn a change from a few sequences, apply it to any face."""


@delta.command("train")
@click.argument("sequence_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@generator_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model folder: model.json + model.safetensors, training.json, checkpoint/.",
)
@click.option(
    "--space",
    default="z",
    show_default=True,
    help="Latent space of the edit (z; w/wp once inversion has them).",
)
@click.option("--steps", default=DEFAULTS["steps"], show_default=True, help="Optimisation steps (batches).")
@click.option(
    "--batch-size", default=DEFAULTS["batch_size"], show_default=True, help="Training pairs per step."
)
@click.option(
    "--lr", default=DEFAULTS["lr"], show_default=True, help="Peak Adam learning rate (cosine schedule)."
)
@click.option(
    "--delta-dim", default=DEFAULTS["delta_dim"], show_default=True, help="Size of the change code Δ."
)
@click.option(
    "--hidden", default=DEFAULTS["hidden"], show_default=True, help="Width of E's and D's hidden layer."
)
@click.option(
    "--subspace",
    default=DEFAULTS["subspace"],
    show_default=True,
    help="Work in this many leading directions of the sequences' change (0: the whole space).",
)
@click.option(
    "--basis",
    default=DEFAULTS["basis"],
    show_default=True,
    type=click.Choice(["path", "line", "pca"]),
    help="Subspace: the least-squares line's direction then the principal directions of what it leaves of "
    "the mean path over sequences (path) or of every sequence's change (line), or the principal "
    "directions of the change alone (pca).",
)
@click.option(
    "--decoder",
    default=DEFAULTS["decoder"],
    show_default=True,
    type=click.Choice(["both", "shared", "position"]),
    help="What the decoder reads: the code alone (shared: one curved path every face follows), the code "
    "and the face's position (position: the parent method), or their sum (both).",
)
@click.option(
    "--position-penalty",
    default=DEFAULTS["position_penalty"],
    show_default=True,
    help="Weight of the penalty on the position-dependent part of the change (decoder both).",
)
@path_degree_option
@click.option(
    "--noise",
    default=DEFAULTS["noise"],
    show_default=True,
    help="Input noise during training, as a fraction of the latents' scale.",
)
@click.option(
    "--lambda-a", default=DEFAULTS["lambda_a"], show_default=True, help="Weight of a's own reconstruction."
)
@click.option(
    "--lambda-b", default=DEFAULTS["lambda_b"], show_default=True, help="Weight of the transfer to b."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the initial weights, pairs and noise.")
@click.option(
    "--inversion-steps",
    default=100,
    show_default=True,
    help="Optimisation steps per image when a folder has no latents for this generator yet.",
)
@click.option("--checkpoint-every", default=500, show_default=True, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/ (same settings and data).")
@device_option
@json_option
def train_cmd(
    sequence_dirs,
    generator,
    out_dir,
    space,
    steps,
    batch_size,
    lr,
    delta_dim,
    hidden,
    subspace,
    basis,
    decoder,
    position_penalty,
    path_degree,
    noise,
    lambda_a,
    lambda_b,
    seed,
    inversion_steps,
    checkpoint_every,
    resume,
    device,
    as_json,
):
    """Learn the change shown by SEQUENCE_DIR... (folders of image sequences, one sub-folder per sequence).

    Images without latents for GENERATOR are inverted first (and the latents kept in the folder).
    """
    from tlgan.delta.sequences import read_sequences, sequence_latents
    from tlgan.delta.train import train_delta
    from tlgan.models import load_generator

    sets = [read_sequences(d) for d in sequence_dirs]
    factors = sorted({s.factor for s in sets if s.factor})
    if len(factors) > 1:
        raise TlganError(
            f"the sequence folders show different factors ({', '.join(factors)}); one model learns one "
            f"change: train one model per factor"
        )
    G = load_generator(generator, device)
    latents = [sequence_latents(s, G, space=space, steps=inversion_steps, progress=not as_json) for s in sets]
    model = train_delta(
        latents,
        out_dir,
        values=[s.values for s in sets],
        factor=factors[0] if factors else None,
        space=space,
        generator=generator,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        delta_dim=delta_dim,
        hidden=hidden,
        subspace=subspace,
        basis=basis,
        decoder=decoder,
        position_penalty=position_penalty,
        path_degree=path_degree,
        noise=noise,
        lambda_a=lambda_a,
        lambda_b=lambda_b,
        seed=seed,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=not as_json,
        info={"sequence_dirs": [str(s.root) for s in sets]},
    )
    summary = {
        "out": out_dir,
        "factor": model.factor,
        "unit": model.info["unit"],
        "sequences": model.info["sequences"],
        **model.info["training"],
    }
    if as_json:
        print_json(summary)
    else:
        click.echo(
            f"learned edit of {model.factor or 'the sequences'} saved to {out_dir} "
            f"({sum(model.info['sequences'])} sequences; alpha 1 = {model.info['unit']:.4g} per step)"
        )


def _holder(G, spec, model, hold, axes_path, classifier, device, as_json):
    """The --hold of `delta edit`: ``hold_attributes`` with all but the starts and edited latents
    given (``keywords["attributes"]``: the held names), or None without it."""
    if hold is None:
        return None
    from functools import partial

    from tlgan.delta.evaluate import ATTRIBUTE_OF
    from tlgan.editing.hold import held_attributes, hold_attributes
    from tlgan.models import load_classifier

    F = load_classifier(classifier, device)
    if axes_path == "auto":
        from tlgan.pipeline import default_axes

        axes = default_axes(spec, classifier, device=device, space=model.space, progress=not as_json)
    else:
        from tlgan.axes.feature_axes import FeatureAxes

        axes = FeatureAxes.load(axes_path)
    moved = [ATTRIBUTE_OF[model.factor]] if model.factor in ATTRIBUTE_OF else []
    held = held_attributes(F, axes, hold, moved=moved)
    return partial(hold_attributes, G, F, axes=axes, attributes=held, space=model.space)


@delta.command("edit")
@click.option(
    "--model", "model_dir", required=True, type=click.Path(), help="Folder from `tlgan delta train`."
)
@click.option(
    "--latent",
    "latent_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from a saved latent (from `tlgan invert`).",
)
@click.option("--seed", type=int, default=None, help="Start from latent 0 of this seed instead.")
@click.option(
    "--alpha", default=1.0, show_default=True, help="Steps of the learned change (negative reverses it)."
)
@click.option(
    "--alphas", default=None, help="Several alphas, e.g. -3,-2,-1,0,1,2,3: a grid (--out) and --gif."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default="edit.png", show_default=True, help="PNG to write."
)
@click.option(
    "--gif", type=click.Path(dir_okay=False), default=None, help="Also write the --alphas walk as a GIF."
)
@click.option(
    "--save-latent", type=click.Path(dir_okay=False), default=None, help="Save the edited latent (one alpha)."
)
@click.option(
    "--generator", default=None, help="Generator to draw with (default: the one the model was trained for)."
)
@click.option("--upscale", default=2, show_default=True, help="Nearest-neighbour enlargement of the PNG/GIF.")
@click.option(
    "--hold",
    default=None,
    help="Hold these attributes' classifier readings at the start's while editing: names "
    "(Male,Eyeglasses) or 'all' (every attribute but the one the edit drives).",
)
@click.option(
    "--axes",
    "axes_path",
    default="auto",
    show_default=True,
    help="The generator's axes for --hold: a file from `tlgan fit`, or 'auto' (fit once and cache).",
)
@classifier_option
@device_option
@json_option
def edit_cmd(
    model_dir,
    latent_file,
    seed,
    alpha,
    alphas,
    out,
    gif,
    save_latent,
    generator,
    upscale,
    hold,
    axes_path,
    classifier,
    device,
    as_json,
):
    """Apply a learned edit to a latent and draw the result."""
    import torch

    from tlgan.delta.edit import delta_edit, delta_walk
    from tlgan.delta.model import load_delta
    from tlgan.editing.latent_file import load_latent
    from tlgan.editing.latent_file import save_latent as write_latent
    from tlgan.imaging import save_gif, save_grid, save_image
    from tlgan.models import load_generator

    model = load_delta(model_dir)
    spec = generator or model.info.get("generator") or "toyfaces-gan"
    G = load_generator(spec, device)
    if (latent_file is None) == (seed is None):
        raise TlganError("give exactly one start: --latent FILE (from `tlgan invert`) or --seed S")
    if latent_file is not None:
        latent, meta = load_latent(latent_file)
        if meta.get("space", "z") != model.space:
            raise TlganError(
                f"{latent_file} is a {meta.get('space')!r} latent but the edit works in {model.space!r}"
            )
        latent = latent.reshape(model.latent_shape)
    else:
        latent = G.sample_latents(1, seed=seed, space=model.space)[0].reshape(model.latent_shape)
    space = model.space
    result = {
        "model": str(model_dir),
        "factor": model.factor,
        "unit": model.info.get("unit"),
        "generator": spec,
    }
    keep = _holder(G, spec, model, hold, axes_path, classifier, device, as_json)
    if keep is not None:
        result["held"] = keep.keywords["attributes"]
    with torch.no_grad():
        if alphas is not None:
            steps = _floats(alphas, "--alphas")
            walk = delta_walk(latent, model, steps)
            if keep is not None:
                walk = keep(latent[None].expand_as(walk), walk)
            images = G.synthesize(walk.reshape(len(steps), -1), space).float().cpu()
            save_grid(images, out, nrow=len(steps), upscale=upscale)
            if gif:
                save_gif(
                    torch.cat([images, images.flip(0)[1:-1]]) if len(steps) > 2 else images,
                    gif,
                    upscale=upscale,
                )
            result.update(alphas=steps, out=out, gif=gif)
        else:
            if gif:
                raise TlganError("--gif needs --alphas (the frames of the walk)")
            edited = delta_edit(latent, model, alpha)
            if keep is not None:
                edited = keep(latent[None], edited[None])[0]
            save_image(G.synthesize(edited.reshape(1, -1), space).float().cpu()[0], out, upscale=upscale)
            if save_latent:
                write_latent(
                    save_latent,
                    edited.reshape(-1),
                    space=space,
                    generator=spec,
                    edit=str(model_dir),
                    alpha=alpha,
                )
            result.update(alpha=alpha, out=out, latent=save_latent)
    if as_json:
        print_json(result)
    else:
        click.echo(f"wrote {out}" + (f" and {gif}" if gif else ""))


@delta.command("eval")
@generator_option
@classifier_option
@click.option(
    "--factors", default="yaw,light,smile,age", show_default=True, help="Factors to learn and measure."
)
@click.option(
    "--train-identities",
    default="1,2,5,10",
    show_default=True,
    help="Training sequence counts of the learning curve.",
)
@click.option("--test-identities", default=5, show_default=True, help="Held-out identities per factor.")
@click.option("--steps", "seq_steps", default=7, show_default=True, help="Images per sequence.")
@click.option(
    "--seed", default=0, show_default=True, help="Training identities from this seed, held-out from seed+1."
)
@click.option(
    "--inversion-steps", default=100, show_default=True, help="Optimisation steps per inverted image."
)
@click.option(
    "--inversion-patience",
    default=None,
    type=int,
    help="Early-stop patience of the inversions (default: the inversion's; large runs every step).",
)
@click.option(
    "--warp",
    default="none",
    show_default=True,
    help="Synthetic check: see the latent through a known curved warp, e.g. bend:0.3 (bend the factors' "
    "axes quadratically into the Male direction); its numbers are the warped toy's, not the "
    "generator's.",
)
@click.option(
    "--codes",
    default="fit",
    show_default=True,
    type=click.Choice(["mean", "fit"]),
    help="Code of each requested change: the mean of E over the training sequences, or the code fitted to "
    "make that change from all their positions.",
)
@click.option(
    "--train-steps", default=DEFAULTS["steps"], show_default=True, help="Training steps of each model."
)
@path_degree_option
@click.option(
    "--decoder",
    default=DEFAULTS["decoder"],
    show_default=True,
    type=click.Choice(["both", "shared", "position"]),
    help="The learned edit's decoder (see `tlgan delta train --help`).",
)
@click.option(
    "--joint-rank",
    default=0,
    show_default=True,
    help="Invert the training sequences jointly: one latent per identity plus a path of this many "
    "directions they share (0: one image at a time).",
)
@click.option(
    "--joint-steps", default=200, show_default=True, help="Optimisation steps of the joint inversion."
)
@click.option(
    "--seeds",
    "train_seeds",
    default="0",
    show_default=True,
    help="Training seeds, e.g. 0,1,2: each learned edit is trained once per seed and reported as the mean, "
    "with the spread.",
)
@click.option(
    "--axes",
    "axes_path",
    default="none",
    show_default=True,
    help="Axes file for the axis baseline (smile), 'auto' (fit once and cache), or 'none'.",
)
@click.option(
    "--hold/--no-hold",
    default=False,
    show_default=True,
    help="Also score the learned and linear edits with every other attribute's classifier reading held "
    "at the start's (along --axes, or axes fitted once in --work).",
)
@click.option(
    "--hold-samples",
    default=20_000,
    show_default=True,
    help="Samples the held attributes' axes are fitted on when --axes gives none (a warped generator).",
)
@click.option(
    "--work",
    "work_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Keep sequences, inversions and models here (a rerun then skips the inversions).",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write the report page here: index.html, delta-eval.json, edit grids.",
)
@device_option
@json_option
def eval_cmd(
    generator,
    classifier,
    factors,
    train_identities,
    test_identities,
    seq_steps,
    seed,
    inversion_steps,
    inversion_patience,
    warp,
    codes,
    train_steps,
    path_degree,
    decoder,
    train_seeds,
    joint_rank,
    joint_steps,
    axes_path,
    hold,
    hold_samples,
    work_dir,
    out_dir,
    device,
    as_json,
):
    """Measure learned edits against the toyfaces renderer's true targets, beside the straight-line baselines."""
    from tlgan.delta.evaluate import evaluate_delta
    from tlgan.delta.report import write_delta_report
    from tlgan.delta.smooth import check_degree
    from tlgan.models import load_classifier, load_generator

    G = load_generator(generator, device)
    F = load_classifier(classifier, device) if classifier.lower() != "none" else None
    axes = None
    if axes_path == "auto":
        from tlgan.pipeline import default_axes

        axes = default_axes(generator, classifier, device=device, progress=not as_json)
    elif axes_path.lower() != "none":
        from tlgan.axes.feature_axes import FeatureAxes

        axes = FeatureAxes.load(axes_path)
    sizes = [int(v) for v in _floats(train_identities, "--train-identities")]
    result = evaluate_delta(
        G,
        F,
        factors=[f.strip() for f in factors.split(",") if f.strip()],
        train_identities=sizes,
        test_identities=test_identities,
        steps=seq_steps,
        seed=seed,
        inversion_steps=inversion_steps,
        inversion_patience=inversion_patience,
        axes=axes,
        work_dir=work_dir,
        train_kwargs={
            "steps": train_steps,
            "path_degree": check_degree(path_degree),
            **({} if decoder == DEFAULTS["decoder"] else {"decoder": decoder}),
        },
        grid_dir=out_dir,
        warp=None if warp.lower() == "none" else warp,
        codes=codes,
        train_seeds=[int(v) for v in _floats(train_seeds, "--seeds")],
        joint_rank=joint_rank,
        joint_steps=joint_steps,
        hold=hold,
        hold_samples=hold_samples,
        progress=not as_json,
    )
    if out_dir is not None:
        write_delta_report(result, out_dir)
        result["report"] = str(Path(out_dir) / "index.html")
    if as_json:
        print_json(result)
        return
    for factor, entry in result["factors"].items():
        best = entry["best"]
        line = (
            f"{factor:14s} learned {best['learned']['psnr_db']:6.2f} dB   linear {best['linear']['psnr_db']:6.2f} dB"
            f"   gain {best['gain_db']:+.2f} ± {best['gain_db_spread']:.2f} dB   headroom {best['headroom_db']:+.2f} dB"
        )
        if "axis" in best:
            line += f"   axis {best['axis']['psnr_db']:6.2f} dB"
        if best["target_above_ceiling"]:
            line += (
                f"   (+{best['target_gain_db']:g} dB is above the inversion ceiling: no edit of these latents can "
                f"gain it)"
            )
        click.echo(line)
    if result.get("warp"):
        click.echo(
            f"(through the synthetic warp {result['warp']}: figures of the warped toy, not of {generator})"
        )
    if out_dir is not None:
        click.echo(f"report: {result['report']}")


def register(group: click.Group) -> None:
    group.add_command(delta)
