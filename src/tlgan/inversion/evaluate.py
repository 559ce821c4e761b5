"""How well inversion works on the toyfaces world, where the truth is known.

- *generated*: faces the generator makes from fresh latents, so an exact inverse exists;
- *rendered*: fresh renders of the toyfaces renderer (never seen by the generator or the
  encoder), whose ground-truth attribute labels come from the world's latent scores. The
  attribute agreement is the fraction of (image, attribute) pairs where the classifier's
  label of the reconstruction (logit > 0) equals the ground-truth label.

With ``tune`` every rendered photo is also pivotally tuned (:mod:`tlgan.inversion.tune`),
and with ``axes`` the edit ``edit`` (e.g. Smiling +2) is applied to each photo's latent and
drawn by its tuned generator (and by the original, for comparison): the report gives the
fraction of photos whose edited attribute's probability rises and the mean absolute change
of the other attributes' probabilities.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.inversion.optimize import DEFAULT_STEPS, invert
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

# Seeds no training run uses (the export and the encoder train on seed 0; `toyfaces eval` uses 90_001-2).
GENERATED_SEED = 90_011
RENDERED_SEED = 90_012


def _mean(values: torch.Tensor | None) -> float | None:
    return None if values is None else round(float(values.float().mean()), 3)


@torch.no_grad()
def _labels(classifier: Classifier, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    return torch.cat(
        [classifier.logits(images[i : i + batch_size]) > 0 for i in range(0, len(images), batch_size)]
    ).cpu()


def _edit_report(
    generators, latents: torch.Tensor, space: str, classifier: Classifier, axes, edit: tuple[str, float], cols
) -> dict[str, Any]:
    """Edit each latent by ``edit`` and draw it with its own generator (``generators[k]``)."""
    from tlgan.editing.edit import edit_latents

    attribute, amount = edit
    if attribute not in classifier.attributes:
        raise TlganError(f"the classifier has no attribute {attribute!r} to edit")
    target = classifier.attributes.index(attribute)
    others = [c for c in cols if c != target]
    edited = edit_latents(latents, axes, {attribute: float(amount)}, space=space)
    rises, changes = [], []
    with torch.no_grad():
        for k, G in enumerate(generators):
            device = G.device
            pair = torch.stack([latents[k], edited[k]]).to(device)
            p = classifier.probabilities(
                G.synthesize(pair, space).to(next(classifier.parameters()).device)
            ).cpu()
            rises.append(bool(p[1, target] > p[0, target]))
            changes.append(float((p[1, others] - p[0, others]).abs().mean()))
    return {
        "edit": f"{attribute} {amount:+g}",
        "edited_rises_fraction": round(sum(rises) / len(rises), 4),
        "others_mean_abs_change": round(sum(changes) / len(changes), 4),
    }


def evaluate_inversion(
    generator: Generator,
    classifier: Classifier,
    *,
    encoder=None,
    renderer: Generator | None = None,
    n: int = 100,
    steps: int = DEFAULT_STEPS,
    optimize: bool = True,
    generated_seed: int = GENERATED_SEED,
    rendered_seed: int = RENDERED_SEED,
    tune: bool = False,
    tune_kwargs: dict[str, Any] | None = None,
    axes=None,
    edit: tuple[str, float] = ("Smiling", 2.0),
    skip_generated: bool = False,
    progress: bool = False,
    **invert_kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Invert ``n`` generated and ``n`` rendered faces; return PSNRs, agreement and timing.

    ``renderer`` defaults to the registered ``toyfaces-render``. ``invert_kwargs`` go to
    :func:`tlgan.inversion.invert` (e.g. ``lr``, ``feature_weight``). Result keys:
    ``generated``: psnr_db_mean, encoder_psnr_db_mean, latent_cosine_mean, seconds_per_image;
    ``rendered``: psnr_db_mean, encoder_psnr_db_mean, attribute_agreement,
    encoder_attribute_agreement, target_attribute_agreement (the classifier on the renders
    themselves: the ceiling), seconds_per_image, encoder_seconds_per_image,
    optimize_seconds_per_image; with ``tune`` also tuned_psnr_db_mean,
    tuned_attribute_agreement, tune_seconds_per_image; with ``axes`` ``edit`` (see
    module docs) for the tuned generators (``edit_tuned``) and the original (``edit_original``).
    ``tune_kwargs`` go to :func:`tlgan.inversion.tune.tune_generator`.
    """
    from tlgan.inversion.tune import tune_generator
    from tlgan.models import load_generator
    from tlgan.toyfaces import world

    device = next(iter(generator.parameters()), torch.empty(0)).device
    kwargs = dict(
        encoder=encoder,
        classifier=classifier,
        optimize=optimize,
        steps=steps,
        progress=progress,
        **invert_kwargs,
    )

    space = invert_kwargs.get("space", "z")
    generated = None
    if not skip_generated:
        z = generator.sample_latents(n, seed=generated_seed, space=space)
        with torch.no_grad():
            faces = torch.cat(
                [generator.synthesize(z[i : i + 64].to(device), space).cpu() for i in range(0, n, 64)]
            )
        gen = invert(generator, faces, **kwargs)
        cosine = torch.nn.functional.cosine_similarity(gen.latents.flatten(1), z.flatten(1), dim=1)
        generated = {
            "psnr_db_mean": _mean(gen.psnr_db),
            "encoder_psnr_db_mean": _mean(gen.encoder_psnr_db),
            "latent_cosine_mean": _mean(cosine),
            "seconds_per_image": round(gen.seconds_per_image, 3),
        }
        log.info("generated faces: %s", generated)

    renderer = renderer if renderer is not None else load_generator("toyfaces-render")
    zr = renderer.sample_latents(n, seed=rendered_seed)
    with torch.no_grad():
        renders = torch.cat([renderer.synthesize(zr[i : i + 64]).cpu() for i in range(0, n, 64)])
    truth_all = world.labels(zr)
    shared = [a for a in classifier.attributes if a in world.ATTRIBUTES]
    if not shared:
        raise TlganError(
            f"classifier {classifier.name!r} scores none of the toyfaces attributes "
            f"({', '.join(world.ATTRIBUTES[:3])}, ...), so attribute agreement cannot be measured; "
            f"use a classifier trained on toyfaces (e.g. toyfaces-classifier)"
        )
    truth = truth_all[:, [world.ATTRIBUTES.index(a) for a in shared]]
    cols = [classifier.attributes.index(a) for a in shared]
    ren = invert(generator, renders, **kwargs)

    def agreement(images: torch.Tensor) -> float:
        return round(float((_labels(classifier, images.to(device))[:, cols] == truth).float().mean()), 4)

    rendered = {
        "psnr_db_mean": _mean(ren.psnr_db),
        "encoder_psnr_db_mean": _mean(ren.encoder_psnr_db),
        "attribute_agreement": agreement(ren.reconstructions),
        "seconds_per_image": round(ren.seconds_per_image, 3),
        "encoder_seconds_per_image": round(ren.info["encoder_seconds_per_image"], 3),
        "optimize_seconds_per_image": round(ren.info["optimize_seconds_per_image"], 3),
        "target_attribute_agreement": agreement(renders),
    }
    if tune:
        tuned_recons, tuned_psnrs, tuned_seconds = [], [], []
        edit_tuned = []
        for k in range(n):
            noise = None if ren.noise is None else {name: v[k] for name, v in ren.noise.items()}
            # Tuning fits pixels and edges (no feature term unless tune_kwargs name a classifier):
            # the attributes were settled by the latent search, and it is faster.
            result = tune_generator(
                generator,
                renders[k],
                ren.latents[k],
                space=ren.space,
                noise=noise,
                progress=progress,
                **(tune_kwargs or {}),
            )
            tuned_recons.append(result.reconstruction)
            tuned_psnrs.append(result.psnr_db)
            tuned_seconds.append(result.seconds)
            if axes is not None:
                edit_tuned.append(
                    _edit_report(
                        [result.generator], ren.latents[k : k + 1], ren.space, classifier, axes, edit, cols
                    )
                )
            del result  # one tuned copy at a time
        rendered.update(
            {
                "tuned_psnr_db_mean": _mean(torch.tensor(tuned_psnrs)),
                "tuned_attribute_agreement": agreement(torch.stack(tuned_recons)),
                "tune_seconds_per_image": round(sum(tuned_seconds) / n, 3),
            }
        )
        if edit_tuned:
            rendered["edit_tuned"] = {
                "edit": edit_tuned[0]["edit"],
                "edited_rises_fraction": round(sum(e["edited_rises_fraction"] for e in edit_tuned) / n, 4),
                "others_mean_abs_change": round(sum(e["others_mean_abs_change"] for e in edit_tuned) / n, 4),
            }
    if axes is not None:
        rendered["edit_original"] = _edit_report(
            [generator] * n, ren.latents, ren.space, classifier, axes, edit, cols
        )
    if encoder is not None and optimize:
        # The encoder's own guesses, for the encoder-only row of the comparison.
        with torch.no_grad():
            guess = torch.cat(
                [generator.synthesize(encoder(renders[i : i + 64].to(device))).cpu() for i in range(0, n, 64)]
            )
        rendered["encoder_attribute_agreement"] = agreement(guess)
    log.info("rendered faces: %s", rendered)
    return {
        "generated": generated,
        "rendered": rendered,
        "settings": {
            "n": n,
            "steps": steps if optimize else 0,
            "encoder": encoder is not None,
            "space": space,
            "tune": bool(tune),
            "tune_kwargs": dict(tune_kwargs or {}),
            "classifier": classifier.name,
            "generated_seed": generated_seed,
            "rendered_seed": rendered_seed,
        },
    }
