"""`tlgan train classifier | generator`: train tlgan's own networks on image folders."""
from __future__ import annotations

import click

from tlgan.cli.common import device_option, json_option, print_json

data_option = click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
                           help="Data folder (CelebA layout for the classifier; any image folder for the generator).")
out_option = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                          help="Output folder: model.json + model.safetensors, checkpoint/, metrics.json.")
resume_option = click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint/ (same settings).")
seed_option = click.option("--seed", default=0, show_default=True,
                           help="Seed for initialisation, data order and noise.")


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
@click.option("--name", default="attribute-classifier", show_default=True, help="Model name stored in model.json.")
@json_option
def classifier_cmd(data_dir, out_dir, steps, batch_size, lr, weight_decay, width, resolution, device, seed, resume,
                   checkpoint_every, name, as_json) -> None:
    """Train an attribute classifier on a CelebA-layout folder; report test balanced accuracy."""
    from tlgan.train.classifier import train_classifier

    result = train_classifier(data_dir, out_dir, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              width=width, resolution=resolution, device=device, seed=seed, resume=resume,
                              checkpoint_every=checkpoint_every, name=name)
    if as_json:
        print_json(result)
        return
    click.echo(f"test balanced accuracy ({result['test_images']} images):")
    for attr, value in result["test_balanced_accuracy"].items():
        click.echo(f"  {attr:24s} {value:.4f}")
    click.echo(f"  {'mean':24s} {result['test_mean_balanced_accuracy']:.4f}")
    click.echo(f"saved to {result['out_dir']} ({result['steps']} steps, "
               f"{result['seconds_per_step'] or 0:.3f} s/step)")


@train.command("generator")
@data_option
@out_option
@click.option("--steps", default=10000, show_default=True, help="Optimisation steps (one D and one G update each).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=2e-4, show_default=True, help="Adam learning rate of G and D (constant).")
@click.option("--width", default=32, show_default=True, help="Generator width (channels at half resolution).")
@click.option("--d-width", default=None, type=int, help="Discriminator width [default: --width].")
@click.option("--z-dim", default=512, show_default=True)
@click.option("--resolution", default=64, show_default=True, help="Image side in pixels (power of two).")
@device_option
@seed_option
@click.option("--ema-decay", default=0.999, show_default=True, help="Decay of the generator's weight average.")
@click.option("--sample-every", default=500, show_default=True, help="Steps between sample grids in OUT/samples/.")
@click.option("--checkpoint-every", default=500, show_default=True, help="Steps between checkpoints.")
@resume_option
@click.option("--name", default="dcgan", show_default=True, help="Model name stored in model.json.")
@click.option("--loss", type=click.Choice(["nonsaturating", "hinge"]), default="nonsaturating", show_default=True)
@click.option("--r1-gamma", default=0.0, show_default=True, help="R1 penalty weight on real images (0 = off).")
@click.option("--flip/--no-flip", default=False, show_default=True, help="Mirror training images at random.")
@click.option("--spectral-norm/--no-spectral-norm", default=True, show_default=True,
              help="Spectral normalisation in the discriminator.")
@json_option
def generator_cmd(data_dir, out_dir, steps, batch_size, lr, width, d_width, z_dim, resolution, device, seed, ema_decay,
                  sample_every, checkpoint_every, resume, name, loss, r1_gamma, flip, spectral_norm, as_json) -> None:
    """Train a DCGAN generator on every image under --data; save its weight average."""
    from tlgan.train.generator import train_generator

    result = train_generator(data_dir, out_dir, steps=steps, batch_size=batch_size, lr=lr, width=width,
                             d_width=d_width, z_dim=z_dim, resolution=resolution, device=device, seed=seed,
                             ema_decay=ema_decay, sample_every=sample_every, checkpoint_every=checkpoint_every,
                             resume=resume, name=name, loss=loss, r1_gamma=r1_gamma, flip=flip,
                             spectral_norm=spectral_norm)
    if as_json:
        print_json(result)
        return
    click.echo(f"d_loss {result['d_loss']:.4f}  g_loss {result['g_loss']:.4f}  "
               f"({result['steps']} steps, {result['seconds_per_step'] or 0:.3f} s/step)")
    if result["samples"]:
        click.echo(f"last samples: {result['samples'][-1]}")
    click.echo(f"saved to {result['out_dir']}")


def register(group: click.Group) -> None:
    group.add_command(train)
