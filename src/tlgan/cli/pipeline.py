"""`tlgan models | sample | fit | name-directions | convert | demo | bench`: the TL-GAN chain on the command line.

Editing (`tlgan edit | grid`) is in :mod:`tlgan.cli.editing`.
"""

from __future__ import annotations

from pathlib import Path

import click

from tlgan.cli.common import (
    classifier_option,
    device_option,
    generator_option,
    given_text_attributes,
    json_option,
    parse_floats,
    print_json,
    text_attribute_options,
    truncation_options,
)
from tlgan.errors import TlganError


@click.command("models")
@json_option
def models_cmd(as_json: bool) -> None:
    """List the registered generators, classifiers and axis finders."""
    from tlgan.models import list_models

    listing = list_models()
    try:
        from tlgan.axes.finders import FINDERS

        listing["axis_finders"] = {n: FINDERS.describe(n) for n in FINDERS.names()}
    except ImportError:
        pass
    if as_json:
        print_json(listing)
        return
    for kind, entries in listing.items():
        click.echo(f"{kind}:")
        for name, desc in entries.items():
            click.echo(f"  {name:24s} {desc}")


@click.command("sample")
@generator_option
@classifier_option
@click.option("-n", "n", type=int, default=20_000, help="Number of faces to sample.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder to write.")
@click.option("--seed", type=int, default=0, help="Latent i depends only on (seed, i).")
@click.option(
    "--batch-size",
    type=int,
    default=256,
    help="Samples between progress updates; the networks always run on 64 at a time, so results do not depend on it.",
)
@click.option("--shard-size", type=int, default=4096, help="Samples per shard file.")
@click.option(
    "--space",
    type=click.Choice(["z", "w"]),
    default=None,
    help="Latent space to store and fit in (default: w for StyleGAN generators, else z).",
)
@truncation_options
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", help="bf16 = autocast.")
@click.option("--thumbnails", type=int, default=0, help="Also store each image at this size (0 = none).")
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run in --out (whichever engine started it)."
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: compute the shards on Ray workers (pip install 'tlgan[ray]'); --out must be shared.",
)
@click.option(
    "--address", default=None, help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: a local one)."
)
@click.option(
    "--workers", type=int, default=None, help="Ray workers (default: the cluster's CPUs, or GPUs / G)."
)
@click.option(
    "--gpus-per-worker", type=float, default=0.0, help="GPUs Ray reserves per worker (with --device cuda)."
)
@click.option(
    "--max-retries", type=int, default=3, help="Ray: restarts of a dead worker and retries of its shard."
)
@text_attribute_options
@device_option
@json_option
def sample_cmd(
    generator,
    classifier,
    n,
    out,
    seed,
    batch_size,
    shard_size,
    space,
    truncation_psi,
    truncation_cutoff,
    dtype,
    thumbnails,
    resume,
    engine,
    address,
    workers,
    gpus_per_worker,
    max_retries,
    device,
    as_json,
):
    """Draw N latents, generate, classify, and write a run folder."""
    from tlgan.cli.common import cli_classifier
    from tlgan.models import load_generator
    from tlgan.sampling import LocalEngine, RayEngine, sample

    # With Ray the driver's copies only describe the run (the workers load their own): keep them off the GPU.
    here = "cpu" if engine == "ray" else device
    G = load_generator(generator, here, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    space = space or G.default_space
    F = cli_classifier(classifier, here)
    if engine == "ray":
        runner = RayEngine(
            batch_size=batch_size,
            device=device,
            address=address,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            max_retries=max_retries,
        )
    else:
        runner = LocalEngine(batch_size=batch_size, device=device)
    run = sample(
        G,
        F,
        n,
        out,
        seed=seed,
        shard_size=shard_size,
        space=space,
        dtype=dtype,
        thumbnails=thumbnails,
        resume=resume,
        generator_spec=generator,
        classifier_spec=classifier,
        engine=runner,
    )
    info = {
        "out": str(run.path),
        "n": run.n,
        "space": run.space,
        "attributes": run.attributes,
        "seconds": run.manifest.get("seconds"),
    }
    print_json(info) if as_json else click.echo(f"wrote {run.n} samples to {run.path}")


def _format_metrics(metrics: dict) -> str:
    """'r2=0.912, n_samples=20000': floats to 3 decimals, counts as integers, other values left out."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key}={value}" if isinstance(value, int) else f"{key}={value:.3f}")
    return ", ".join(parts)


def _echo_naming(axes) -> None:
    from tlgan.evaluation.naming import naming_table

    table = naming_table(axes) or {}
    for old, entry in table.items():
        purity = f"purity {entry['purity']:.2f}" if entry["attribute"] is not None else ""
        renamed = f" (now {entry['name']!r})" if entry["name"] != old else ""
        click.echo(f"  {entry['label']:32s} {purity}{renamed}")


@click.command("fit")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--method",
    default=None,
    help="Axis finder: glm, logistic, svm, pca or sefa (see `tlgan models`); default: the run's "
    "space's (tlgan.axes.finders.default_method: glm in z, logistic in w).",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Axes file to write (.safetensors)."
)
@click.option("--ratio", type=float, default=None, help="svm: top/bottom fraction of samples per attribute.")
@click.option(
    "--target",
    type=click.Choice(["logit", "probability"]),
    default=None,
    help="glm: regress the clipped logit, or the probability rescaled to [-1, 1] (TL-GAN's own; "
    "the default for a run scored by clip:MODEL).",
)
@click.option("--n-components", type=int, default=None, help="pca, sefa: number of components (default 64).")
@click.option(
    "--layers", default=None, help="sefa: style layers to factorise, e.g. 0-3 (style-based generators)."
)
@click.option(
    "--name-directions",
    "name_directions",
    is_flag=True,
    help="pca, sefa: name each component after the attribute it moves (see `tlgan name-directions`).",
)
@click.option(
    "--faces", type=int, default=256, show_default=True, help="Faces edited to name the components."
)
@click.option(
    "--export-boundaries",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write InterFaceGAN boundary .npy files into this folder.",
)
@text_attribute_options(effect="Added to RUN_DIR (sampled with clip:), scored from its stored embeddings.")
@device_option
@json_option
def fit_cmd(
    run_dir,
    method,
    out,
    ratio,
    target,
    n_components,
    layers,
    name_directions,
    faces,
    export_boundaries,
    device,
    as_json,
):
    """Fit axes on a run folder: one per attribute, or unsupervised components (pca, sefa).

    With --attribute / --attributes (a run sampled with a clip: classifier): add those attributes
    in words to RUN_DIR, scored from its stored image embeddings (no image is generated), fit their
    axes and merge them into --out when it exists.
    """
    from tlgan.cli.common import parse_int_list

    kwargs = {
        k: v
        for k, v in {
            "ratio": ratio,
            "target": target,
            "n_components": n_components,
            "layers": parse_int_list(layers) if layers else None,
        }.items()
        if v is not None
    }
    words = given_text_attributes()
    if words:
        from tlgan.cli.text_attributes import fit_words_cmd

        if name_directions or export_boundaries:
            raise TlganError("--attribute cannot be combined with --name-directions or --export-boundaries")
        return fit_words_cmd(words, run_dir, method, out, kwargs, device, as_json)
    from tlgan.axes.finders import FINDERS, default_method, make_finder
    from tlgan.models import GENERATORS, load_generator
    from tlgan.pipeline import fit_axes, name_run_directions
    from tlgan.sampling import Run

    run = Run.open(run_dir)
    method = method or default_method(run.space)
    FINDERS.check(method)
    uses_generator = make_finder(method, **kwargs).uses_generator
    if name_directions and not uses_generator:
        raise TlganError(
            f"--name-directions names unsupervised components (pca, sefa); {method} axes are "
            f"already named after their attributes"
        )
    # Ground truth is reported for registered generators that know it (toyfaces-render, -style); finders
    # that read the generator (sefa, pca) load whatever the run was sampled with.
    generator = (
        load_generator(run.generator, device, **run.generator_options)
        if uses_generator or run.generator in GENERATORS
        else None
    )
    axes = fit_axes(run, method, generator, **kwargs)
    if name_directions:
        axes = name_run_directions(axes, run, generator, faces=faces, device=device, progress=not as_json)
    axes.save(out)
    if export_boundaries:
        from tlgan.axes.interfacegan import export_boundaries as export

        export(axes, export_boundaries)
    if as_json:
        print_json(
            {
                "out": out,
                "method": method,
                "n": run.n,
                "space": axes.space,
                "generator": axes.generator,
                "axes": axes.metrics,
                "info": {k: v for k, v in axes.info.items() if k != "naming"},
                "naming": axes.info.get("naming"),
            }
        )
    else:
        click.echo(f"wrote {len(axes.attributes)} axes ({method}) to {out}")
        if axes.info.get("isotropic"):
            click.echo(
                f"  no structure: every variance of this {axes.space} latent lies within isotropic noise, so "
                f"its principal components are arbitrary directions"
            )
        for name in axes.attributes:
            click.echo(f"  {name:22s} {_format_metrics(axes.metrics.get(name, {}))}")
        if name_directions:
            _echo_naming(axes)


@click.command("name-directions")
@click.argument("axes_path", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Run folder whose generator, classifier and first faces are used.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Named axes file to write (default: AXES with .named before the suffix).",
)
@click.option("--faces", type=int, default=256, show_default=True, help="Faces edited along each component.")
@click.option("--steps", default="-2,2", show_default=True, help="Comma-separated edit amounts.")
@click.option(
    "--min-change",
    type=float,
    default=None,
    help="Least mean probability change that counts as moving an attribute "
    "(default: tlgan.evaluation.naming.DEFAULT_MIN_CHANGE, 0.1).",
)
@click.option("--no-rename", is_flag=True, help="Keep the pc names; only record labels and profiles.")
@device_option
@json_option
def name_directions_cmd(axes_path, run_dir, out, faces, steps, min_change, no_rename, device, as_json):
    """Name each direction after the attribute it moves most (pc3 ≈ +Smiling), with its purity."""
    from tlgan.axes import FeatureAxes
    from tlgan.pipeline import name_run_directions
    from tlgan.sampling import Run

    axes = FeatureAxes.load(axes_path)
    named = name_run_directions(
        axes,
        Run.open(run_dir),
        faces=faces,
        steps=parse_floats(steps),
        min_change=min_change,
        rename=not no_rename,
        device=device,
        progress=not as_json,
    )
    path = (
        Path(out)
        if out
        else Path(axes_path).with_name(Path(axes_path).stem + ".named" + Path(axes_path).suffix)
    )
    named.save(path)
    if as_json:
        print_json({"out": str(path), "attributes": named.attributes, "naming": named.info["naming"]})
    else:
        click.echo(f"wrote {path}")
        _echo_naming(named)


@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder to write model.json + model.safetensors into.",
)
@json_option
def convert_cmd(checkpoint, out, as_json):
    """Convert a checkpoint (NVlabs .pkl, rosinality .pt, ...) into a tlgan folder; nothing in it is run."""
    from tlgan.models.formats import convert

    folder = convert(checkpoint, out)
    if as_json:
        print_json({"out": str(folder), "checkpoint": checkpoint})
    else:
        click.echo(f"wrote {folder}/model.json and model.safetensors (load it with --generator {folder})")


@click.command("import-boundaries")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Axes file to write (.safetensors)."
)
@click.option(
    "--generator", "generator", default="unknown", help="The generator spec the boundaries belong to."
)
@click.option(
    "--space",
    type=click.Choice(["z", "w"]),
    default=None,
    help="Latent space (default: from the file names, e.g. *_w_boundary.npy is w).",
)
@json_option
def import_boundaries_cmd(paths, out, generator, space, as_json):
    """Read InterFaceGAN boundary .npy files (a folder or files) into an axes file."""
    from tlgan.axes.interfacegan import import_boundaries

    axes = import_boundaries(paths[0] if len(paths) == 1 else list(paths), space=space, generator=generator)
    axes.save(out)
    if as_json:
        print_json({"out": out, "space": axes.space, "attributes": axes.attributes, "info": axes.info})
    else:
        click.echo(
            f"wrote {len(axes.attributes)} axes in {axes.space!r} to {out}: {', '.join(axes.attributes)}"
        )


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="out/demo")
@click.option("-n", "n", type=int, default=20_000, help="Faces to sample.")
@click.option("--seed", type=int, default=0)
@click.option("--method", default=None, help="Axis finder: glm, logistic or svm (default: z's, glm).")
@click.option("--no-report", is_flag=True, help="Skip the evaluation report.")
@device_option
@json_option
def demo_cmd(out, n, seed, method, no_report, device, as_json):
    """The main job on the bundled models: sample, fit, disentangle, edit, report."""
    from tlgan.pipeline import run_demo

    summary = run_demo(
        out, n=n, seed=seed, method=method, device=device, report=not no_report, progress=not as_json
    )
    if as_json:
        print_json(summary)
    else:
        click.echo(f"demo finished in {summary['seconds']:.1f} s; outputs in {out}/")
        for name, metrics in summary["axes"].items():
            click.echo(f"  {name:22s} " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


@click.command("bench")
@click.option("--quick", is_flag=True, help="Small sizes: a smoke test, not figures to report.")
@click.option(
    "--only",
    default=None,
    help="Comma-separated sections (sampling, fit, unsupervised, toyfaces, studio, studio-load, stylegan2, "
    "stylegan3, ray, inversion, align, clip).",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
@device_option
@json_option
def bench_cmd(quick, only, out, device, as_json):
    """Measure throughput as ratios against baselines timed in the same run."""
    from tlgan.bench.runner import run_bench

    result = run_bench(device=device, quick=quick, only=only.split(",") if only else None)
    if out:
        from tlgan.io import write_json

        write_json(out, result)
    if as_json:
        print_json(result)
    else:
        for key, value in result.items():
            click.echo(f"{key:36s} {value}")


@click.command("eval")
@click.option(
    "-n", "--n", "n", type=int, default=2000, help="Faces rendered and generated for each comparison."
)
@generator_option
@classifier_option
@device_option
@json_option
def toyfaces_eval_cmd(n, generator, classifier, device, as_json):
    """Check the bundled classifier and generator against the renderer's ground truth."""
    from tlgan.toyfaces.bundled_eval import evaluate_bundled

    result = evaluate_bundled(n=n, generator=generator, classifier=classifier, device=device)
    if as_json:
        print_json(result)
        return
    clf, gen = result["classifier"], result["generator"]
    click.echo(
        f"classifier {clf['name']}: mean balanced accuracy {clf['mean_balanced_accuracy']:.4f} "
        f"(min {clf['min_balanced_accuracy']:.4f}) on {n} fresh renders"
    )
    for name, acc in clf["balanced_accuracy"].items():
        click.echo(f"  {name:22s} {acc:.4f}")
    click.echo(
        f"generator {gen['name']}: max |frequency difference| {gen['frequency_abs_diff_max']:.4f}, "
        f"mean |correlation difference| {gen['correlation_abs_diff_mean']:.4f}, "
        f"Frechet distance {gen['frechet_distance']:.3f} (floor {gen['frechet_distance_floor']:.3f}), "
        f"sharpness {gen['sharpness_ratio']:.3f} of the renders'"
    )
    click.echo(f"renderer: {result['render_faces_per_second']:.0f} faces/s")


def register(group: click.Group) -> None:
    for command in (
        models_cmd,
        sample_cmd,
        fit_cmd,
        name_directions_cmd,
        convert_cmd,
        import_boundaries_cmd,
        demo_cmd,
        bench_cmd,
    ):
        group.add_command(command)
    from tlgan.cli.toyfaces import toyfaces

    toyfaces.add_command(toyfaces_eval_cmd)
    from tlgan.cli.distill import distill_cmd
    from tlgan.cli.train import train

    train.add_command(distill_cmd)
