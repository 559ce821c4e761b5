"""`tlgan train classifier | generator | clip`: train tlgan's own networks (clip: on toyfaces renders)."""

from __future__ import annotations

import click

from tlgan.cli.common import arch_kwargs, arch_options, device_option, json_option, print_json

data_option = click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Data folder (CelebA layout for the classifier; any image folder for the generator).",
)
out_option = click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: model.json + model.safetensors, checkpoint/, metrics.json.",
)
resume_option = click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/ (same settings).")
seed_option = click.option(
    "--seed", default=0, show_default=True, help="Seed for initialisation, data order and noise."
)


@click.group("train")
def train() -> None:
    """Train the attribute classifier or the GAN generator."""


@train.command("classifier")
@data_option
@out_option
@click.option("--steps", default=3000, show_default=True, help="Optimisation steps (batches).")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=2e-3, show_default=True, help="Peak AdamW learning rate (cosine schedule).")
@click.option("--weight-decay", default=1e-2, show_default=True)
@click.option("--width", default=32, show_default=True, help="Channels of the first block.")
@click.option("--resolution", default=64, show_default=True, help="Image side in pixels (power of two).")
@device_option
@seed_option
@resume_option
@click.option("--checkpoint-every", default=500, show_default=True, help="Steps between checkpoints.")
@click.option(
    "--name", default="attribute-classifier", show_default=True, help="Model name stored in model.json."
)
@json_option
def classifier_cmd(
    data_dir,
    out_dir,
    steps,
    batch_size,
    lr,
    weight_decay,
    width,
    resolution,
    device,
    seed,
    resume,
    checkpoint_every,
    name,
    as_json,
) -> None:
    """Train an attribute classifier on a CelebA-layout folder; report test balanced accuracy."""
    from tlgan.train.classifier import train_classifier

    result = train_classifier(
        data_dir,
        out_dir,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        width=width,
        resolution=resolution,
        device=device,
        seed=seed,
        resume=resume,
        checkpoint_every=checkpoint_every,
        name=name,
    )
    if as_json:
        print_json(result)
        return
    click.echo(f"test balanced accuracy ({result['test_images']} images):")
    for attr, value in result["test_balanced_accuracy"].items():
        click.echo(f"  {attr:24s} {value:.4f}")
    click.echo(f"  {'mean':24s} {result['test_mean_balanced_accuracy']:.4f}")
    click.echo(
        f"saved to {result['out_dir']} ({result['steps']} steps, "
        f"{result['seconds_per_step'] or 0:.3f} s/step)"
    )


@train.command("generator")
@data_option
@out_option
@click.option(
    "--steps", default=10000, show_default=True, help="Optimisation steps (one D and one G update each)."
)
@click.option("--batch-size", default=64, show_default=True)
@arch_options
@click.option(
    "--lr",
    default=None,
    type=float,
    help="Adam learning rate of G and D (constant) [default: 2e-4 dcgan, 2.5e-3 stylegan2].",
)
@click.option(
    "--width", default=32, show_default=True, help="DCGAN generator width (channels at half resolution)."
)
@click.option("--d-width", default=None, type=int, help="DCGAN discriminator width [default: --width].")
@click.option("--z-dim", default=512, show_default=True)
@click.option("--resolution", default=64, show_default=True, help="Image side in pixels (power of two).")
@device_option
@seed_option
@click.option(
    "--ema-decay", default=0.999, show_default=True, help="Decay of the generator's weight average."
)
@click.option(
    "--sample-every", default=500, show_default=True, help="Steps between sample grids in OUT/samples/."
)
@click.option("--checkpoint-every", default=500, show_default=True, help="Steps between checkpoints.")
@resume_option
@click.option("--name", default=None, help="Model name stored in model.json [default: the architecture].")
@click.option(
    "--loss", type=click.Choice(["nonsaturating", "hinge"]), default="nonsaturating", show_default=True
)
@click.option(
    "--r1-gamma",
    default=None,
    type=float,
    help="R1 penalty weight on real images [default: 0 (off) for dcgan, 0.0002 R^2 / batch for stylegan2].",
)
@click.option("--r1-every", default=16, show_default=True, help="Steps between (lazy) R1 penalties.")
@click.option("--mixing-prob", default=0.9, show_default=True, help="StyleGAN2 style-mixing probability.")
@click.option(
    "--pl-weight",
    default=0.0,
    show_default=True,
    help="StyleGAN2 path-length penalty weight (0 = off; the paper uses 2).",
)
@click.option("--pl-every", default=4, show_default=True, help="Steps between (lazy) path-length penalties.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Mixed precision: auto = bfloat16 autocast on CUDA, float32 elsewhere.",
)
@click.option("--flip/--no-flip", default=False, show_default=True, help="Mirror training images at random.")
@click.option(
    "--spectral-norm/--no-spectral-norm",
    default=True,
    show_default=True,
    help="Spectral normalisation in the DCGAN discriminator.",
)
@json_option
def generator_cmd(
    data_dir,
    out_dir,
    steps,
    batch_size,
    arch,
    channel_base,
    channel_max,
    w_dim,
    mapping_layers,
    lr,
    width,
    d_width,
    z_dim,
    resolution,
    device,
    seed,
    ema_decay,
    sample_every,
    checkpoint_every,
    resume,
    name,
    loss,
    r1_gamma,
    r1_every,
    mixing_prob,
    pl_weight,
    pl_every,
    precision,
    flip,
    spectral_norm,
    as_json,
) -> None:
    """Train a GAN generator (DCGAN or StyleGAN2) on every image under --data; save its weight average."""
    from tlgan.train.generator import train_generator

    sizes = arch_kwargs(
        arch, channel_base=channel_base, channel_max=channel_max, w_dim=w_dim, mapping_layers=mapping_layers
    )
    result = train_generator(
        data_dir,
        out_dir,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        width=width,
        d_width=d_width,
        z_dim=z_dim,
        resolution=resolution,
        device=device,
        seed=seed,
        ema_decay=ema_decay,
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        resume=resume,
        name=name,
        loss=loss,
        r1_gamma=r1_gamma,
        r1_every=r1_every,
        flip=flip,
        spectral_norm=spectral_norm,
        arch=arch,
        arch_kwargs=sizes,
        mixing_prob=mixing_prob,
        pl_weight=pl_weight,
        pl_every=pl_every,
        precision=precision,
        progress=not as_json,
    )
    if as_json:
        print_json(result)
        return
    click.echo(
        f"d_loss {result['d_loss']:.4f}  g_loss {result['g_loss']:.4f}  "
        f"({result['steps']} steps, {result['seconds_per_step'] or 0:.3f} s/step)"
    )
    if result["samples"]:
        click.echo(f"last samples: {result['samples'][-1]}")
    click.echo(f"saved to {result['out_dir']}")


@train.command("clip")
@out_option
@click.option(
    "--steps", default=1200, show_default=True, help="Optimisation steps (batches of fresh renders)."
)
@click.option("--batch-size", default=96, show_default=True, help="Faces per step, each with a caption.")
@click.option(
    "--negatives",
    default=1,
    show_default=True,
    help="Hard-negative captions per face (one attribute made false).",
)
@click.option(
    "--hard-weight",
    default=0.0,
    show_default=True,
    help="Weight of each face's softmax over its own caption and hard negatives (0: plain NegCLIP).",
)
@click.option("--caption-most", default=7, show_default=True, help="Most attributes one caption mentions.")
@click.option(
    "--caption-keep",
    default="0.1,0.6",
    show_default=True,
    help="LO,HI: each caption mentions each attribute with a probability drawn from U(LO, HI).",
)
@click.option(
    "--caption-focus",
    multiple=True,
    metavar="ATTRIBUTE=P",
    help="Also state ATTRIBUTE in a caption with probability P (repeatable; for attributes read poorly).",
)
@click.option(
    "--focus-negatives",
    is_flag=True,
    help="Hard negatives flip the --caption-focus attributes first, when a caption states them.",
)
@click.option("--lr", default=1.5e-3, show_default=True, help="Peak AdamW learning rate (cosine schedule).")
@click.option("--weight-decay", default=0.1, show_default=True)
@click.option(
    "--width", default=128, show_default=True, help="Width of the image tower (ViT, 64 px, 16 px patches)."
)
@click.option("--text-width", default=128, show_default=True, help="Width of the text tower.")
@device_option
@seed_option
@resume_option
@click.option(
    "--new-phase",
    is_flag=True,
    help="Resume OUT's checkpoint with other loss, caption or rate settings (recorded in training.json).",
)
@click.option("--checkpoint-every", default=100, show_default=True, help="Steps between checkpoints.")
@click.option(
    "--monitor-every",
    default=100,
    show_default=True,
    help="Steps between zero-shot checks on 512 renders (0: none).",
)
@json_option
def clip_cmd(
    out_dir,
    steps,
    batch_size,
    negatives,
    caption_most,
    caption_keep,
    hard_weight,
    caption_focus,
    focus_negatives,
    lr,
    weight_decay,
    width,
    text_width,
    device,
    seed,
    resume,
    new_phase,
    checkpoint_every,
    monitor_every,
    as_json,
) -> None:
    """Train a small CLIP on toyfaces renders and captions of their attributes (toyfaces-clip)."""
    from tlgan.train.clip import train_clip

    try:
        keep = tuple(float(v) for v in caption_keep.split(","))
    except ValueError:
        keep = ()
    if len(keep) != 2 or not 0 <= keep[0] <= keep[1] <= 1:
        raise click.BadParameter(
            f"{caption_keep!r}: write LO,HI with 0 <= LO <= HI <= 1", param_hint="--caption-keep"
        )
    focus = {}
    for item in caption_focus:
        name, _, value = item.partition("=")
        try:
            focus[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: write ATTRIBUTE=P, e.g. Smiling=0.8", param_hint="--caption-focus"
            ) from None
    result = train_clip(
        out_dir,
        steps=steps,
        batch_size=batch_size,
        negatives=negatives,
        caption_most=caption_most,
        caption_keep=keep,
        hard_weight=hard_weight,
        caption_focus=focus,
        focus_negatives=focus_negatives,
        lr=lr,
        weight_decay=weight_decay,
        width=width,
        text_width=text_width,
        device=device,
        seed=seed,
        resume=resume,
        new_phase=new_phase,
        checkpoint_every=checkpoint_every,
        monitor_every=monitor_every,
        progress=not as_json,
    )
    if as_json:
        print_json(result)
        return
    if result["monitor"]:
        last = result["monitor"][max(result["monitor"], key=int)]
        click.echo(f"zero-shot balanced accuracy on 512 renders: mean {sum(last.values()) / len(last):.4f}")
    click.echo(
        f"saved to {result['out_dir']} ({result['steps']} steps, {result['seconds_per_step'] or 0:.3f} s/step); "
        f"judge it with `tlgan toyfaces eval-clip --model {result['out_dir']}`"
    )


def register(group: click.Group) -> None:
    group.add_command(train)
