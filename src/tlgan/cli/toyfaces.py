"""`tlgan toyfaces ...`: the toyfaces world from the command line (export, grid, sequences, and the
measurements of toyfaces-style: compare-finders, layer-ranges)."""

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
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Latent seed; face i is latent i of this seed."
)
@click.option("--partition", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions.")
@click.option("--batch-size", "batch_size", type=int, default=256, show_default=True)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Keep images already in the folder instead of drawing them again.",
)
def export_cmd(out_dir, n, seed, partition, batch_size, resume):
    """Write N faces in CelebA's layout (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt)."""
    from tlgan.toyfaces.export import export_celeba

    result = export_celeba(
        out_dir, n, seed=seed, partition=_parse_partition(partition), batch_size=batch_size, resume=resume
    )
    click.echo(f"wrote {result.n} faces to {result.out_dir} ({result.rendered} drawn, {result.reused} kept)")


@toyfaces.command("grid")
@click.option(
    "--seeds", default="0-15", show_default=True, help="One face per seed (latent 0 of each), e.g. 0-7,12."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default="faces.png", show_default=True, help="PNG to write."
)
@click.option(
    "--nrow", type=int, default=None, help="Faces per row (default: about the square root of the count)."
)
@click.option("--upscale", type=int, default=1, show_default=True, help="Nearest-neighbour enlargement.")
@click.option(
    "--generator",
    default="toyfaces-render",
    show_default=True,
    help="Registered name, model folder, TorchScript file, or path/to/file.py:factory.",
)
@device_option
@click.option(
    "--labels", "show_labels", is_flag=True, help="Print each face's true attributes (toyfaces-render only)."
)
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
            raise TlganError(
                f"--labels knows the truth only for toyfaces-render, not {generator!r}; drop --labels"
            )
        lab = world.labels(z)
        print_json(
            {
                str(s): [a for a, v in zip(world.ATTRIBUTES, row, strict=True) if v]
                for s, row in zip(seed_list, lab.tolist(), strict=True)
            }
        )


@toyfaces.command("sequences")
@click.option(
    "--factor", required=True, help="Factor that changes: yaw, light, smile, age, ... (any world factor)."
)
@click.option(
    "--identities", type=int, default=10, show_default=True, help="Sequences to draw, one per identity."
)
@click.option("--steps", type=int, default=7, show_default=True, help="Images per sequence.")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Sequence folder to write."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Identity k is latent k of this seed.")
@click.option("--start", type=int, default=0, show_default=True, help="Index of the first identity.")
@click.option(
    "--values", default=None, help="Factor value per step, comma-separated (default: its usual range)."
)
@click.option(
    "--invert/--no-invert",
    default=True,
    show_default=True,
    help="Also invert every image into --generator's latent space (latents.safetensors).",
)
@click.option("--generator", default="toyfaces-gan", show_default=True, help="Generator to invert into.")
@click.option(
    "--inversion-steps",
    "inversion_steps",
    type=int,
    default=100,
    show_default=True,
    help="Optimisation steps per image after the encoder's guess.",
)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def sequences_cmd(
    factor,
    identities,
    steps,
    out_dir,
    seed,
    start,
    values,
    invert,
    generator,
    inversion_steps,
    device,
    as_json,
):
    """Draw sequences in which only FACTOR changes (a head turning, a light moving, ...), as a sequence folder."""
    from tlgan.delta.sequences import write_sequences
    from tlgan.io import save_tensors
    from tlgan.toyfaces.sequences import factor_sequences

    value_list = None
    if values is not None:
        try:
            value_list = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise TlganError(f"cannot read --values {values!r}; write numbers like -20,-10,0,10,20") from None
        steps = len(value_list)
    seqs = factor_sequences(factor, identities, steps, seed=seed, start=start, values=value_list)
    names = [f"id{int(i):04d}" for i in seqs.indices]
    per_identity = {
        name: {key: round(float(v[k, 0]), 6) for key, v in seqs.factors.items() if key != seqs.factor}
        for k, name in enumerate(names)
    }
    result = write_sequences(
        out_dir,
        seqs.images,
        values=seqs.values.tolist(),
        factor=seqs.factor,
        names=names,
        extra={
            "source": "toyfaces-render",
            "seed": seed,
            "identities": [int(i) for i in seqs.indices],
            "identity_factors": per_identity,
        },
    )
    save_tensors(
        result.root / "identities.safetensors",
        {"z": seqs.latents},
        {"format": "tlgan.toyfaces-identities/1", "seed": seed, "names": names},
    )
    summary = {
        "out": str(result.root),
        "factor": seqs.factor,
        "values": seqs.values.tolist(),
        "sequences": len(names),
        "steps": len(seqs.values),
        "inverted": False,
    }
    if invert:
        from tlgan.delta.sequences import LATENTS_FILE, sequence_latents
        from tlgan.io import load_tensors
        from tlgan.models import load_generator

        G = load_generator(generator, device)
        sequence_latents(result, G, steps=inversion_steps, progress=not as_json)
        psnr = load_tensors(result.root / LATENTS_FILE)[0]["psnr_db"]
        summary.update(inverted=True, generator=generator, inversion_psnr_db=round(float(psnr.mean()), 3))
    if as_json:
        print_json(summary)
    else:
        extra = f", inverted into {generator} (PSNR {summary['inversion_psnr_db']:.2f} dB)" if invert else ""
        click.echo(
            f"wrote {len(names)} sequences of {len(seqs.values)} steps of {seqs.factor} to {out_dir}{extra}"
        )


@toyfaces.command("compare-finders")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--methods", default="glm,logistic,svm", show_default=True, help="Finders to fit, comma-separated."
)
@click.option(
    "--spaces", default="z,w", show_default=True, help="Spaces to fit in (the run's faces in each)."
)
@click.option(
    "--generator",
    default=None,
    help="Fit in this generator's spaces instead of the run's; it must draw the same face for the same "
    "z (toyfaces-style-aniso for a toyfaces-style run: the same faces in an anisotropic w).",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def compare_finders_cmd(run_dir, methods, spaces, generator, out, as_json):
    """Fit every finder in z and in w on one run of a generator that knows its truth (toyfaces-style)."""
    from tlgan.models import load_generator
    from tlgan.sampling import Run
    from tlgan.toyfaces.style_eval import compare_finders, run_latents

    run = Run.open(run_dir)
    spec = generator or run.generator
    generator = load_generator(spec, **run.generator_options)
    if generator.true_axes(space=run.space) is None:
        raise TlganError(f"generator {spec!r} does not know its true axes; use toyfaces-style")
    space_list = [s.strip() for s in spaces.split(",") if s.strip()]
    latents = {space: run_latents(run, generator, space) for space in space_list}
    result = compare_finders(
        latents, run.scores(), run.attributes, generator, [m.strip() for m in methods.split(",") if m.strip()]
    )
    result["run"] = str(run_dir)
    result["generator"] = spec
    if out:
        from tlgan.io import write_json

        write_json(out, result)
    if as_json:
        print_json(result)
        return
    for space in space_list:
        for method, row in result[space].items():
            click.echo(
                f"{space:2s} {method:9s} mean cosine {row['mean']:.4f}  min {row['min']:.4f} ({row['argmin']})"
                f"  {row['fit_seconds']:.1f} s"
            )


@toyfaces.command("layer-ranges")
@click.option("--generator", default="toyfaces-style", show_default=True, help="A style-based generator.")
@click.option("--classifier", default="toyfaces-classifier", show_default=True)
@click.option(
    "--axes",
    "axes_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Axes fitted in w (default: the generator's true axes).",
)
@click.option("--faces", type=int, default=64, show_default=True, help="Faces edited per attribute.")
@click.option("--step", type=float, default=1.5, show_default=True, help="Edit size along each unit axis.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--attributes", default=None, help="Comma-separated attributes (default: all the axes know).")
@click.option(
    "--lock-others",
    is_flag=True,
    help="Edit each attribute along its axis made orthogonal to the axes of the attributes read only "
    "by other layers (conditional editing).",
)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def layer_ranges_cmd(
    generator, classifier, axes_path, faces, step, seed, attributes, lock_others, device, as_json
):
    """Edit each attribute on its true wp layers, on all, and on the others; print the classifier's response."""
    import torch

    from tlgan.axes import FeatureAxes
    from tlgan.evaluation.layer_ranges import layer_range_effects
    from tlgan.models import load_classifier, load_generator

    G = load_generator(generator, device)
    C = load_classifier(classifier, device)
    truth = G.true_axes(space="w")
    if truth is None or "layers" not in truth.info:
        raise TlganError(f"generator {generator!r} does not know its attributes' layers; use toyfaces-style")
    axes = FeatureAxes.load(axes_path) if axes_path else truth
    names = (
        [a.strip() for a in attributes.split(",")]
        if attributes
        else [a for a in axes.attributes if a in C.attributes]
    )
    ranges = {a: truth.info["layers"][a] for a in names}
    if lock_others:
        from tlgan.axes.disentangle import project_out

        layers_of = truth.info["layers"]
        vectors = axes.vectors.clone()
        for a in names:
            others = [
                b for b in axes.attributes if b in layers_of and not set(layers_of[b]) & set(layers_of[a])
            ]
            vectors[axes.index(a)] = project_out(axes[a], torch.stack([axes[b] for b in others]))
        axes = FeatureAxes(
            vectors, axes.attributes, space=axes.space, generator=axes.generator, method=axes.method
        )
    result = layer_range_effects(G, C, axes, ranges, faces=faces, seed=seed, step=step, device=device)
    result["lock_others"] = lock_others
    if as_json:
        print_json(result)
        return
    for name, row in result["attributes"].items():
        own = "-" if row["own_ratio"] is None else f"{row['own_ratio']:.3f}"
        other = "-" if row["other_ratio"] is None else f"{row['other_ratio']:.3f}"
        click.echo(
            f"{name:20s} layers {row['layers'][0]}-{row['layers'][-1]}  all {row['effect_all']:+.3f}  "
            f"own/all {own}  other/all {other}"
        )


@toyfaces.command("eval-clip")
@click.option(
    "--model",
    default="",
    help="The CLIP to judge, as after clip: (a folder, a Hub id) [default: the bundled toyfaces-clip].",
)
@click.option(
    "-n", "n", type=int, default=2000, show_default=True, help="Fresh renders for zero-shot accuracy."
)
@click.option(
    "--n-axes",
    type=int,
    default=20_000,
    show_default=True,
    help="Samples the axes are fitted on (0: skip axes).",
)
@click.option(
    "--classifier",
    default="toyfaces-classifier",
    show_default=True,
    help="The classifier measured beside it.",
)
@click.option("--batch-size", "batch_size", type=int, default=500, show_default=True)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def eval_clip_cmd(model, n, n_axes, classifier, batch_size, device, as_json):
    """Zero-shot balanced accuracy of a CLIP on toyfaces from prompt pairs, and its axes' cosines to the truth."""
    from tlgan.toyfaces.clip_eval import evaluate_clip

    result = evaluate_clip(
        model,
        n=n,
        n_axes=n_axes,
        classifier=classifier,
        batch_size=batch_size,
        device=device,
        progress=not as_json,
    )
    if as_json:
        print_json(result)
        return
    zs = result["zero_shot"]
    click.echo(f"zero-shot balanced accuracy on {n} renders (CLIP / {classifier}):")
    for name, value in zs["balanced_accuracy"].items():
        click.echo(f"  {name:20s} {value:.4f}  {zs['cnn_balanced_accuracy'][name]:.4f}")
    click.echo(
        f"  {'mean':20s} {zs['mean']:.4f}  {zs['cnn_mean']:.4f}   (unseen wording: {zs['unseen_mean']:.4f})"
    )
    if "axes" in result:
        ax = result["axes"]
        click.echo(
            f"axes from {ax['n']} samples, cosine to truth: mean {ax['mean']:.4f}, min {ax['min']:.4f} "
            f"({ax['min_attribute']}); CNN mean {ax['cnn_mean']:.4f}; unseen wording mean {ax['unseen_mean']:.4f}"
        )
        click.echo(f"a new phrase to a fitted axis: {result['phrase_to_axis_seconds']:.3f} s")


def register(group: click.Group) -> None:
    group.add_command(toyfaces)
