"""`tlgan train encoder`: an encoder (image -> latent) that gives `tlgan invert` its first guess,
trained on faces the generator makes itself (:func:`tlgan.train.encoder.train_encoder`)."""

from __future__ import annotations

import click

from tlgan.cli.common import device_option, generator_option, json_option, print_json


@click.command("encoder")
@generator_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for encoder.json + encoder.safetensors (e.g. the generator's own folder).",
)
@click.option("--steps", default=3000, show_default=True, help="Optimisation steps (batches).")
@click.option("--batch-size", default=32, show_default=True, help="Generated faces per step.")
@click.option("--lr", default=1e-3, show_default=True, help="Peak Adam learning rate (cosine schedule).")
@click.option("--width", default=32, show_default=True, help="Channels of the encoder's first block.")
@click.option(
    "--classifier",
    "classifier",
    default="none",
    show_default=True,
    help="Add a feature loss through this classifier's hidden layers (slower).",
)
@click.option(
    "--real-data",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder of real images, trained through reconstruction only.",
)
@click.option("--latent-weight", default=1.0, show_default=True)
@click.option(
    "--pixel-weight", default=1.0, show_default=True, help="Reconstruction through G (0 = latent loss only)."
)
@click.option("--feature-weight", default=0.1, show_default=True, help="With --classifier.")
@click.option(
    "--space",
    type=click.Choice(["z", "wp"]),
    default="z",
    show_default=True,
    help="Latent space the encoder predicts (wp: StyleGAN generators, e4e-style one w plus offsets).",
)
@click.option(
    "--offset-weight", default=1.0, show_default=True, help="With --space wp: L2 weight on the offsets."
)
@click.option("--checkpoint-every", default=250, show_default=True, help="Steps between checkpoints.")
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the training latents and initial weights."
)
@click.option("--resume", is_flag=True, help="Continue from OUT/encoder-checkpoint/ (same settings).")
@device_option
@json_option
def train_encoder_cmd(
    generator,
    out_dir,
    steps,
    batch_size,
    lr,
    width,
    classifier,
    real_data,
    latent_weight,
    pixel_weight,
    feature_weight,
    space,
    offset_weight,
    checkpoint_every,
    seed,
    resume,
    device,
    as_json,
):
    """Train an encoder (image -> latent) for a generator on faces it makes itself."""
    from tlgan.cli.common import cli_classifier
    from tlgan.models import load_generator
    from tlgan.train.common import resolve_device
    from tlgan.train.encoder import train_encoder

    device = str(resolve_device(device))
    G = load_generator(generator, device)
    F = None if classifier.lower() in ("none", "") else cli_classifier(classifier, device)
    summary = train_encoder(
        G,
        out_dir,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
        classifier=F,
        real_data=real_data,
        resume=resume,
        width=width,
        latent_weight=latent_weight,
        pixel_weight=pixel_weight,
        feature_weight=feature_weight,
        checkpoint_every=checkpoint_every,
        generator_spec=generator,
        progress=not as_json,
        space=space,
        offset_weight=offset_weight,
    )
    if as_json:
        print_json({"out": out_dir, **summary})
    else:
        click.echo(
            f"encoder saved to {out_dir}: PSNR {summary['eval']['psnr_db_mean']:.2f} dB on fresh faces "
            f"({summary['steps']} steps, {summary['seconds']:.0f} s)"
        )


def register(group: click.Group) -> None:
    from tlgan.cli.train import train

    train.add_command(train_encoder_cmd)
