"""`tlgan toyfaces ...`: the toyfaces world from the command line (export, grid)."""
from __future__ import annotations

import click

from tlgan.cli.common import device_option, parse_int_list, print_json
from tlgan.errors import TlganError


def _parse_partition(text: str):
    try:
        parts = tuple(float(p) for p in str(text).split(","))
    except ValueError:
        raise TlganError(f"cannot read partition {text!r}; write three fractions like 0.8,0.1,0.1") from None
    if len(parts) != 3:
        raise TlganError(f"partition {text!r} needs three fractions (train,val,test), like 0.8,0.1,0.1")
    return parts


@click.group("toyfaces")
def toyfaces() -> None:
    """The toyfaces world: cartoon faces with known attributes and true latent axes."""


@toyfaces.command("export")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("-n", "n", type=int, required=True, help="Number of faces.")
@click.option("--seed", type=int, default=0, show_default=True, help="Latent seed; face i is latent i of this seed.")
@click.option("--partition", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions.")
@click.option("--batch-size", "batch_size", type=int, default=256, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Keep images already in the folder instead of drawing them again.")
def export_cmd(out_dir, n, seed, partition, batch_size, resume):
    """Write N faces in CelebA's layout (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt)."""
    from tlgan.toyfaces.export import export_celeba

    result = export_celeba(out_dir, n, seed=seed, partition=_parse_partition(partition), batch_size=batch_size,
                           resume=resume)
    click.echo(f"wrote {result.n} faces to {result.out_dir} ({result.rendered} drawn, {result.reused} kept)")


@toyfaces.command("grid")
@click.option("--seeds", default="0-15", show_default=True, help="One face per seed (latent 0 of each), e.g. 0-7,12.")
@click.option("--out", type=click.Path(dir_okay=False), default="faces.png", show_default=True, help="PNG to write.")
@click.option("--nrow", type=int, default=None, help="Faces per row (default: about the square root of the count).")
@click.option("--upscale", type=int, default=1, show_default=True, help="Nearest-neighbour enlargement.")
@click.option("--generator", default="toyfaces-render", show_default=True,
              help="Registered name, model folder, TorchScript file, or path/to/file.py:factory.")
@device_option
@click.option("--labels", "show_labels", is_flag=True, help="Print each face's true attributes (toyfaces-render only).")
def grid_cmd(seeds, out, nrow, upscale, generator, device, show_labels):
    """Render a PNG grid of faces, one per seed."""
    import torch

    from tlgan.imaging import save_grid
    from tlgan.models import load_generator
    from tlgan.toyfaces import world

    seed_list = parse_int_list(seeds)
    if not seed_list:
        raise TlganError(f"--seeds {seeds!r} names no seed; write it like 0-15")
    G = load_generator(generator, device)
    z = torch.cat([G.sample_latents(1, seed=s) for s in seed_list])
    with torch.no_grad():
        images = G.synthesize(z)
    save_grid(images, out, nrow=nrow, upscale=upscale)
    click.echo(f"wrote {out} ({len(seed_list)} faces)")
    if show_labels:
        if G.name != "toyfaces-render":
            raise TlganError(f"--labels knows the truth only for toyfaces-render, not {generator!r}; drop --labels")
        lab = world.labels(z)
        print_json({str(s): [a for a, v in zip(world.ATTRIBUTES, row) if v] for s, row in zip(seed_list, lab.tolist())})


def register(group: click.Group) -> None:
    group.add_command(toyfaces)
