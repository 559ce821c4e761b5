"""Holding attributes by what the classifier reads: locked axes for edits that are not straight.

Projecting an edit off the locked attributes' axes (:mod:`tlgan.axes.disentangle`) keeps
those attributes where the latent-to-attribute map is linear. Where it is not (a latent that
bends an attribute quadratically, an edit that depends on the face, a learned edit whose
change carries the noise of the latents it was fitted on), the edited image's readings of
the locked attributes drift anyway, by an amount that differs from face to face.

:func:`hold_attributes` puts them back. Each edited latent moves within the span of the held
attributes' axes, towards the image on which the classifier reads what it read on the start's
(Adam on the squared difference of the logits, every latent on its own, a bounded move). Only
the held attributes' own directions are used, so the change that the edit asked for, which
those axes do not span, is left as it was. It costs ``steps`` passes of the generator and the
classifier, forward and backward, per latent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from tlgan.axes.disentangle import locked_basis
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError

#: Logits are read within +-9.2 (P between 1e-4 and 1 - 1e-4): beyond that an attribute counts
#: as certain, and a reading that is certain either way is not pulled further.
LOGIT_BOUND = 9.2
#: Adam steps and step size of the default hold (latent units per step along each unit direction
#: of the span). An exact solve (damped Gauss-Newton to the start's readings) was tried and
#: held worse on the curved check: moving far along noisy axes changes what they do not read.
HOLD_STEPS = 30
HOLD_LR = 0.05


def _flat(latents, name: str) -> torch.Tensor:
    latents = torch.as_tensor(latents)
    if not latents.is_floating_point():
        raise TlganError(f"{name} must be floating point, not {latents.dtype}")
    if latents.ndim == 1:
        latents = latents[None]
    return latents.reshape(len(latents), -1)


def held_attributes(
    classifier, axes: FeatureAxes, hold: str | Sequence[str], moved: Sequence[str] = ()
) -> list[str]:
    """The attributes ``hold`` names: ``"all"`` is every attribute that both the classifier
    reads and ``axes`` has, less ``moved`` (those the edit is meant to change); otherwise a
    comma-separated string or a list of names, each checked against both (close matches in
    the error)."""
    if isinstance(hold, str) and hold.strip().lower() == "all":
        names = [a for a in classifier.attributes if a in axes.attributes and a not in set(moved)]
        if not names:
            raise TlganError(
                "nothing to hold: the classifier and the axes share no attribute besides the one edited"
            )
        return names
    names = [h.strip() for h in hold.split(",")] if isinstance(hold, str) else [str(h) for h in hold]
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        raise TlganError("name the attributes to hold, e.g. Male,Eyeglasses, or 'all'")
    for name in names:
        classifier.attribute_index(name)  # unknown names raise with close matches
        axes.index(name)
    clash = [n for n in names if n in set(moved)]
    if clash:
        raise TlganError(f"cannot hold {', '.join(clash)}: the edit is meant to change it")
    return names


def hold_attributes(
    generator,
    classifier,
    starts,
    edited,
    axes: FeatureAxes,
    attributes: Sequence[str],
    *,
    space: str = "z",
    steps: int = HOLD_STEPS,
    lr: float = HOLD_LR,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """``edited`` (N, *latent shape), or one latent (D,), moved within the span of
    ``attributes``' axes so that the classifier's logits of those attributes on each image
    come back towards its logits on the image of the corresponding ``starts`` latent; returns
    a tensor of ``edited``'s shape and dtype.

    ``axes`` are the generator's feature axes in ``space`` (e.g. ``tlgan fit``'s); their
    dimension must be the latent's (flattened). The move is ``steps`` Adam steps of size
    ``lr`` on the coordinates along an orthonormal basis of that span, so each coordinate
    moves by at most about ``steps * lr`` latent units (1.5 by default): a hold bounded in
    size, which leaves alone what a large move along imperfect axes would change. Each latent
    is held on its own (Adam is elementwise and the generator and classifier run in eval
    mode), so a result does not depend on the batch it was in; the latent with the smallest
    mismatch seen over the steps is kept, so a latent already held stays where it is.
    """
    from tlgan.inversion.encoder import frozen

    starts_flat, edited_flat = _flat(starts, "starts").detach(), _flat(edited, "edited latents").detach()
    if starts_flat.shape != edited_flat.shape:
        raise TlganError(
            f"starts {tuple(starts_flat.shape)} and edited latents {tuple(edited_flat.shape)} must pair up one to one"
        )
    if axes.space != space:
        raise TlganError(
            f"the axes are for space {axes.space!r}, the latents for {space!r}; fit axes in {space!r}"
        )
    dim = edited_flat.shape[1]
    if axes.vectors.shape[1] != dim:
        raise TlganError(
            f"the axes have {axes.vectors.shape[1]} dimensions and the latents {dim}; use axes of this "
            "generator and space"
        )
    steps = int(steps)
    if steps < 0:
        raise TlganError(f"steps must be 0 or more, not {steps}")
    if not attributes:
        return torch.as_tensor(edited).clone()
    rows = [axes.index(a) for a in attributes]
    heads = [classifier.attribute_index(a) for a in attributes]
    device = generator.device
    basis = locked_basis(axes.vectors[rows]).to(device, torch.float32)  # (R, D)
    shape = torch.as_tensor(edited).shape
    latent_shape = shape[1:] if len(shape) > 1 else shape
    out = torch.empty_like(edited_flat, dtype=torch.float32)

    def read(latents):  # (M, D) -> (M, A) held logits, bounded
        logits = classifier.logits(generator.synthesize(latents.reshape(-1, *latent_shape), space))[:, heads]
        return logits.float().clamp(-LOGIT_BOUND, LOGIT_BOUND)

    with frozen(generator, classifier), torch.enable_grad():  # also when called under no_grad
        for s in tqdm(range(0, len(out), batch_size), desc="hold", disable=not progress, leave=False):
            x = edited_flat[s : s + batch_size].to(device, torch.float32)
            with torch.no_grad():
                goal = read(starts_flat[s : s + batch_size].to(device, torch.float32))
            alpha = torch.zeros(len(x), len(basis), device=device, requires_grad=True)
            best = torch.full((len(x),), float("inf"), device=device)
            kept = torch.zeros_like(alpha)
            opt = torch.optim.Adam([alpha], lr=float(lr))
            for step in range(steps + 1):
                miss = (read(x + alpha @ basis) - goal).pow(2).sum(1)
                with torch.no_grad():
                    better = miss < best
                    best = torch.where(better, miss, best)
                    kept[better] = alpha[better]
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                miss.sum().backward()
                opt.step()
            out[s : s + batch_size] = (x + kept @ basis).detach().cpu()
    return out.to(edited_flat.dtype).reshape(shape)


__all__ = ["hold_attributes", "held_attributes", "HOLD_STEPS", "HOLD_LR", "LOGIT_BOUND"]
