"""`tlgan serve`: the web studio on a local port."""

from __future__ import annotations

import click

from tlgan.cli.align import align_option
from tlgan.cli.common import (
    classifier_option,
    device_option,
    generator_option,
    input_transform_matrix,
    input_transform_options,
    parse_input_transform,
    text_attribute_options,
    truncation_options,
)
from tlgan.studio.batcher import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS
from tlgan.studio.tuned import DEFAULT_MAX_TUNED


@click.command("serve")
@generator_option
@truncation_options
@input_transform_options
@click.option(
    "--space",
    type=click.Choice(["z", "w", "wp"]),
    default=None,
    help="Space the faces are edited in (default: w for StyleGAN generators, else z; with --axes: theirs). "
    "wp: W+ latents (one w per layer; uploads invert best there), moved along w axes.",
)
@classifier_option
@click.option(
    "--axes",
    "axes",
    type=click.Path(dir_okay=False),
    default=None,
    help="Axes file from `tlgan fit` (default: fitted once for the generator/classifier pair and cached).",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Serve a run folder: its generator, its classifier and axes fitted on it (or --axes), in place "
    "of --generator / --classifier. A run sampled with a clip: classifier also gets the 'add an "
    "attribute' field (rows from words).",
)
@click.option(
    "--delta",
    "delta",
    multiple=True,
    type=click.Path(exists=True),
    help="Folder of a learned edit from `tlgan delta train`, shown as a row named after its factor; "
    "repeat for several (they apply after the axis moves, in this order). Must be in --space.",
)
@align_option(
    "ffhq: align every uploaded photo as FFHQ's faces were (dlib's 68 landmarks, the largest face; "
    "pip install 'tlgan[align]'); the page shows the aligned face and offers the edit pasted back into "
    "the photo. The landmark model was trained on iBUG 300-W, whose licence excludes commercial use."
)
@click.option(
    "--translation",
    "translation",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of a translation model from `tlgan train translate`, shown as a row that moves uploaded "
    "photos in one forward pass, without inversion; repeat for several (they apply in this order). "
    "Must work at the generator's resolution.",
)
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 = every interface).")
@click.option("--port", type=int, default=8000, help="Port to listen on (0 = any free port).")
@click.option(
    "--max-batch",
    "max_batch",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BATCH,
    show_default=True,
    help="Most concurrent requests that share one forward pass (1 = no batching).",
)
@click.option(
    "--batch-wait-ms",
    "batch_wait_ms",
    type=click.FloatRange(min=0),
    default=DEFAULT_WAIT_MS,
    show_default=True,
    help="Longest time a batch keeps gathering requests; a lone request never waits.",
)
@click.option(
    "--invert-steps",
    "invert_steps",
    type=click.IntRange(min=0),
    default=None,
    help="Latent search steps per uploaded photo (default: tlgan invert's).",
)
@click.option(
    "--tune-steps",
    "tune_steps",
    type=click.IntRange(min=0),
    default=None,
    help="Pivotal tuning steps per photo uploaded with 'tune the generator' (default: tlgan invert --tune's).",
)
@click.option(
    "--max-tuned",
    "max_tuned",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_TUNED,
    show_default=True,
    help="Tuned generators kept, least recently used forgotten first; each is a copy of the generator's "
    "weights in memory (0 = no tuning).",
)
@text_attribute_options
@device_option
def serve_cmd(
    generator,
    truncation_psi,
    truncation_cutoff,
    rotate,
    translate,
    space,
    classifier,
    axes,
    run_dir,
    delta,
    align,
    translation,
    host,
    port,
    max_batch,
    batch_wait_ms,
    invert_steps,
    tune_steps,
    max_tuned,
    device,
):
    """Open the web studio: buttons and sliders that edit a face along attribute axes.

    For StyleGAN3 the page also turns and moves the face (the input transform; --rotate and
    --translate set where its sliders start).
    """
    from tlgan.cli.common import given_text_attributes
    from tlgan.studio.app import app_from_specs, bind_socket

    sock = bind_socket(host, port)  # fail early, before minutes of axis fitting, if the port is taken
    if run_dir is not None:
        from tlgan.studio.words import app_from_run

        app = app_from_run(
            run_dir,
            axes,
            device,
            max_batch=max_batch,
            batch_wait_ms=batch_wait_ms,
            invert_steps=invert_steps,
            tune_steps=tune_steps,
            max_tuned=max_tuned,
        )
        return _serve(app, sock)
    app = app_from_specs(
        generator,
        classifier,
        axes,
        device=device,
        space=space,
        delta=delta,
        translation=translation,
        align=None if align == "none" else align,
        generator_options={
            "truncation_psi": truncation_psi,
            "truncation_cutoff": truncation_cutoff,
            "input_transform": input_transform_matrix(parse_input_transform(rotate, translate)),
        },
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        invert_steps=invert_steps,
        tune_steps=tune_steps,
        max_tuned=max_tuned,
        attributes=given_text_attributes() or None,
    )
    _serve(app, sock)


def _serve(app, sock) -> None:
    import uvicorn

    from tlgan.studio.app import url_of

    click.echo(f"tlgan studio: {url_of(sock)}  (Ctrl+C to stop)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    server.run(sockets=[sock])


def register(group: click.Group) -> None:
    group.add_command(serve_cmd)
