"""`tlgan report`: measure a run and its axes and write the HTML + JSON evaluation report."""

from __future__ import annotations

import click

from tlgan.cli.common import device_option, json_option, print_json, text_attribute_options
from tlgan.errors import TlganError
from tlgan.toyfaces.lock_demo import LOCK_DEMO


def _parse_steps(text: str):
    try:
        steps = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TlganError(f"cannot read --steps {text!r} as numbers; write them like -2,2") from None
    if not steps:
        raise TlganError("--steps needs at least one number, e.g. -2,2")
    return steps


def _parse_pair(text: str) -> tuple[str, str] | None:
    """'Beard,Male' -> ('Beard', 'Male'); '' -> None (no demonstration)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        return None
    if len(names) != 2:
        raise TlganError(
            f"--lock-demo takes two attribute names, the one removed and the one locked "
            f"(e.g. {','.join(LOCK_DEMO)}); got {text!r}"
        )
    return names[0], names[1]


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--axes",
    "axes_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="Axes file from `tlgan fit`, for the run's generator.",
)
@click.option(
    "--lock", "locks", multiple=True, help="Attribute to hold fixed in the locked edits, repeatable."
)
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    default=None,
    help="Labelled CelebA-layout folder whose attribute correlations are compared with the samples'.",
)
@click.option("--methods", default="glm,logistic,svm", help="Comma-separated axis finders to compare.")
@click.option(
    "--unsupervised",
    default="pca,sefa",
    show_default=True,
    help="Comma-separated unsupervised finders whose named components are compared ('' = none).",
)
@click.option(
    "--n-components", type=int, default=64, show_default=True, help="Components of each unsupervised finder."
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Folder to write the report into."
)
@click.option("--edit-faces", type=int, default=64, help="Faces the edit effect averages over (0 = skip it).")
@click.option("--steps", default="-2,2", help="Comma-separated edit amounts for the edit effect.")
@click.option(
    "--lock-demo",
    default=",".join(LOCK_DEMO),
    show_default=True,
    help="ATTRIBUTE,LOCK: show how locking LOCK changes the removal of ATTRIBUTE, when both are axes "
    "('' = none).",
)
@click.option("--generator", default=None, help="Generator spec (default: the one the run was sampled with).")
@click.option(
    "--classifier", default=None, help="Classifier spec (default: the one the run was scored with)."
)
@text_attribute_options
@device_option
@json_option
def report_cmd(
    run_dir,
    axes_path,
    locks,
    data,
    methods,
    unsupervised,
    n_components,
    out,
    edit_faces,
    steps,
    lock_demo,
    generator,
    classifier,
    device,
    as_json,
):
    """Evaluate RUN_DIR and its axes: separability, geometry, correlations, edit effects, ground truth."""
    from tlgan.axes import FeatureAxes
    from tlgan.cli.common import cli_classifier, given_text_attributes
    from tlgan.evaluation.metrics import lock_demo_key
    from tlgan.evaluation.report import write_report
    from tlgan.models import load_generator
    from tlgan.pipeline import check_axes_for
    from tlgan.sampling import Run

    demo = _parse_pair(lock_demo)
    words = given_text_attributes()  # a clip: classifier's attributes in place of the run's
    run = Run.open(run_dir)
    axes = FeatureAxes.load(axes_path)
    generator_spec = generator or run.generator
    G = load_generator(generator_spec, device)
    check_axes_for(axes, G, run.generator)
    F = (
        cli_classifier(classifier or run.classifier, device)
        if classifier or words
        else run.load_classifier(device)
    )
    summary = write_report(
        run,
        axes,
        out,
        locks=list(locks),
        generator=G,
        classifier=F,
        data=data,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        unsupervised=[m.strip() for m in unsupervised.split(",") if m.strip()],
        n_components=n_components,
        edit_faces=edit_faces,
        steps=_parse_steps(steps),
        lock_demo=demo,
        device=device,
        progress=not as_json,
    )
    if as_json:
        print_json(summary)
        return
    click.echo(f"wrote {summary['outputs']['html']} in {summary['seconds']:.1f} s")
    sep = summary["separability"]
    for name, acc in sep.items():
        ent = summary["entanglement"].get(name, {})
        line = f"  {name:22s} svm accuracy {acc:.3f}" if acc is not None else f"  {name:22s} svm accuracy -"
        if ent:
            ratio, locked = ent.get("ratio"), ent.get("ratio_locked")
            line += f"  entanglement {ratio:.2f}" if ratio is not None else "  entanglement -"
            if locks:
                line += f" (locked {locked:.2f})" if locked is not None else " (locked -)"
        click.echo(line)
    shown = summary.get(lock_demo_key(demo)) if demo else None
    if shown:
        attribute, lock = demo
        click.echo(
            f"  {attribute} {shown['step']:+g}: change of P({lock}) {shown['unlocked']:+.3f} free, "
            f"{shown['locked']:+.3f} with {lock} locked"
        )


def register(group: click.Group) -> None:
    group.add_command(report_cmd)
