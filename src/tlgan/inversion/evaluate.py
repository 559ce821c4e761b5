"""How well inversion works on the toyfaces world, where the truth is known.

- *generated*: faces the generator makes from fresh latents, so an exact inverse exists;
- *rendered*: fresh renders of the toyfaces renderer (never seen by the generator or the
  encoder), whose ground-truth attribute labels come from the world's latent scores. The
  attribute agreement is the fraction of (image, attribute) pairs where the classifier's
  label of the reconstruction (logit > 0) equals the ground-truth label.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import torch

from tlgan.errors import TlganError
from tlgan.inversion.optimize import DEFAULT_STEPS, invert
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

# Seeds no training run uses (the export and the encoder train on seed 0; `toyfaces eval` uses 90_001-2).
GENERATED_SEED = 90_011
RENDERED_SEED = 90_012


def _mean(values: Optional[torch.Tensor]) -> Optional[float]:
    return None if values is None else round(float(values.float().mean()), 3)


@torch.no_grad()
def _labels(classifier: Classifier, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    return torch.cat([classifier.logits(images[i:i + batch_size]) > 0 for i in range(0, len(images), batch_size)]).cpu()


def evaluate_inversion(generator: Generator, classifier: Classifier, *, encoder=None, renderer: Optional[Generator] = None,
                       n: int = 100, steps: int = DEFAULT_STEPS, optimize: bool = True,
                       generated_seed: int = GENERATED_SEED, rendered_seed: int = RENDERED_SEED,
                       progress: bool = False, **invert_kwargs: Any) -> Dict[str, Dict[str, Any]]:
    """Invert ``n`` generated and ``n`` rendered faces; return PSNRs, agreement and timing.

    ``renderer`` defaults to the registered ``toyfaces-render``. ``invert_kwargs`` go to
    :func:`tlgan.inversion.invert` (e.g. ``lr``, ``feature_weight``). Result keys:
    ``generated``: psnr_db_mean, encoder_psnr_db_mean, latent_cosine_mean, seconds_per_image;
    ``rendered``: psnr_db_mean, encoder_psnr_db_mean, attribute_agreement,
    encoder_attribute_agreement, target_attribute_agreement (the classifier on the renders
    themselves: the ceiling), seconds_per_image.
    """
    from tlgan.models import load_generator
    from tlgan.toyfaces import world

    device = next(iter(generator.parameters()), torch.empty(0)).device
    kwargs = dict(encoder=encoder, classifier=classifier, optimize=optimize, steps=steps, progress=progress,
                  **invert_kwargs)

    z = generator.sample_latents(n, seed=generated_seed)
    with torch.no_grad():
        faces = torch.cat([generator.synthesize(z[i:i + 64].to(device)).cpu() for i in range(0, n, 64)])
    gen = invert(generator, faces, **kwargs)
    cosine = torch.nn.functional.cosine_similarity(gen.latents, z, dim=1)
    generated = {"psnr_db_mean": _mean(gen.psnr_db), "encoder_psnr_db_mean": _mean(gen.encoder_psnr_db),
                 "latent_cosine_mean": _mean(cosine), "seconds_per_image": round(gen.seconds_per_image, 3)}
    log.info("generated faces: %s", generated)

    renderer = renderer if renderer is not None else load_generator("toyfaces-render")
    zr = renderer.sample_latents(n, seed=rendered_seed)
    with torch.no_grad():
        renders = torch.cat([renderer.synthesize(zr[i:i + 64]).cpu() for i in range(0, n, 64)])
    truth_all = world.labels(zr)
    shared = [a for a in classifier.attributes if a in world.ATTRIBUTES]
    if not shared:
        raise TlganError(f"classifier {classifier.name!r} scores none of the toyfaces attributes "
                         f"({', '.join(world.ATTRIBUTES[:3])}, ...), so attribute agreement cannot be measured; "
                         f"use a classifier trained on toyfaces (e.g. toyfaces-classifier)")
    truth = truth_all[:, [world.ATTRIBUTES.index(a) for a in shared]]
    cols = [classifier.attributes.index(a) for a in shared]
    ren = invert(generator, renders, **kwargs)

    def agreement(images: torch.Tensor) -> float:
        return round(float((_labels(classifier, images.to(device))[:, cols] == truth).float().mean()), 4)

    rendered = {"psnr_db_mean": _mean(ren.psnr_db), "encoder_psnr_db_mean": _mean(ren.encoder_psnr_db),
                "attribute_agreement": agreement(ren.reconstructions),
                "seconds_per_image": round(ren.seconds_per_image, 3),
                "target_attribute_agreement": agreement(renders)}
    if encoder is not None and optimize:
        # The encoder's own guesses, for the encoder-only row of the comparison.
        with torch.no_grad():
            guess = torch.cat([generator.synthesize(encoder(renders[i:i + 64].to(device))).cpu()
                               for i in range(0, n, 64)])
        rendered["encoder_attribute_agreement"] = agreement(guess)
    log.info("rendered faces: %s", rendered)
    return {"generated": generated, "rendered": rendered,
            "settings": {"n": n, "steps": steps if optimize else 0, "encoder": encoder is not None,
                         "generated_seed": generated_seed, "rendered_seed": rendered_seed}}
