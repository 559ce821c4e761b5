"""`tlgan train distill`: fit a generator to a teacher generator's images (optionally with a patch critic)."""

from __future__ import annotations

import click

from tlgan.cli.common import arch_kwargs, arch_options, device_option, json_option, print_json


@click.command("distill")
@click.option("--teacher", default="toyfaces-render", help="Generator to imitate (registered name or spec).")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--steps", type=int, default=3000)
@click.option("--batch-size", type=int, default=64)
@click.option("--lr", type=float, default=2e-3, help="Peak Adam learning rate (cosine schedule).")
@arch_options
@click.option("--width", type=int, default=32, help="DCGAN generator width.")
@click.option(
    "--upsample",
    type=click.Choice(["transpose", "nearest"]),
    default="transpose",
    show_default=True,
    help="DCGAN upsampling: transposed convs, or nearest-neighbour resizing then 3x3 convs.",
)
@click.option(
    "--classifier",
    default=None,
    help="Classifier whose hidden layers give the feature loss (none: pixels only).",
)
@click.option("--feature-weight", type=float, default=0.1)
@click.option(
    "--edge-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight of the L1 between image gradients (pays for sharp edges in the right place).",
)
@click.option(
    "--laplacian-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight of the L1 between the images' Laplacians (pays for one-pixel steps, against blur).",
)
@click.option(
    "--adversarial",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight of a patch discriminator's hinge loss (0: pure distillation).",
)
@click.option("--d-width", type=int, default=32, show_default=True, help="Patch discriminator channels.")
@click.option(
    "--d-depth",
    type=int,
    default=3,
    show_default=True,
    help="Strided convs of the patch discriminator (patches of 18 px at 2, 38 px at 3).",
)
@click.option("--d-lr", type=float, default=None, help="Discriminator learning rate (default: --lr).")
@click.option(
    "--d-warmup",
    type=int,
    default=0,
    show_default=True,
    help="Steps in which the discriminator trains alone before the generator feels it.",
)
@click.option(
    "--init",
    default=None,
    help="Start from this generator's weights (same architecture and size), e.g. toyfaces-gan.",
)
@click.option("--ema-decay", type=float, default=0.995, show_default=True)
@click.option("--seed", type=int, default=0)
@click.option("--name", default="distilled", help="Model name stored in model.json.")
@click.option("--checkpoint-every", type=int, default=250)
@click.option(
    "--sample-every",
    type=int,
    default=500,
    show_default=True,
    help="Steps between teacher/student grids in OUT/samples/.",
)
@click.option("--resume", is_flag=True)
@device_option
@json_option
def distill_cmd(
    teacher,
    out,
    steps,
    batch_size,
    lr,
    arch,
    channel_base,
    channel_max,
    w_dim,
    mapping_layers,
    width,
    upsample,
    classifier,
    feature_weight,
    edge_weight,
    laplacian_weight,
    adversarial,
    d_width,
    d_depth,
    d_lr,
    d_warmup,
    init,
    ema_decay,
    seed,
    name,
    checkpoint_every,
    sample_every,
    resume,
    device,
    as_json,
):
    """Fit a generator (DCGAN or StyleGAN2) to a teacher generator's images (--adversarial: plus a patch critic)."""
    from tlgan.models import load_classifier, load_generator
    from tlgan.train.distill import distill_generator

    sizes = arch_kwargs(
        arch, channel_base=channel_base, channel_max=channel_max, w_dim=w_dim, mapping_layers=mapping_layers
    )
    result = distill_generator(
        load_generator(teacher, device),
        out,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        width=width,
        classifier=load_classifier(classifier, device) if classifier else None,
        feature_weight=feature_weight,
        ema_decay=ema_decay,
        seed=seed,
        device=device,
        name=name,
        checkpoint_every=checkpoint_every,
        sample_every=sample_every,
        resume=resume,
        teacher_spec=teacher,
        classifier_spec=classifier,
        arch=arch,
        arch_kwargs=sizes,
        edge_weight=edge_weight,
        laplacian_weight=laplacian_weight,
        upsample=upsample,
        adversarial=adversarial,
        d_width=d_width,
        d_depth=d_depth,
        d_lr=d_lr,
        d_warmup=d_warmup,
        init=load_generator(init, device) if init else None,
        init_spec=init,
        progress=not as_json,
    )
    print_json(result) if as_json else click.echo(f"saved {out}/model.json (loss {result['loss']:.4f})")
