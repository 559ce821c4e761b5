"""Inverting sequences jointly: one latent per identity plus a path that every sequence shares.

Images of one face inverted one at a time land on latents that differ in hundreds of
directions the image barely depends on (each inversion settles wherever its start and the
flat directions of the loss leave it); between two steps of a sequence that *wander* can be
several times the requested change, and a learned edit trained on such pairs learns the
wander. :func:`joint_invert` inverts a whole sequence set at once under the constraint the
data promise (every sequence shows the same change): the latent of sequence s at step t is

    x[s, t] = c[s] + h[s, t] @ W

with ``c`` (K, D) one latent per identity, ``W`` (r, D) a path basis shared by every
sequence and ``h`` (K, n, r) each image's coordinates in it. Everything an image of a
sequence has that the others do not must be said in the r shared directions, so the
frame-to-frame wander outside them is gone by construction. The start is the per-image
inversions: ``c`` their mean over the steps, ``W`` the principal directions of their mean
path over sequences (led by the least-squares line), ``h`` their coordinates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from tlgan.errors import TlganError

log = logging.getLogger(__name__)

JOINT_FORMAT = "tlgan.sequence-latents-joint/1"
JOINT_FILE = "latents-joint.safetensors"
DEFAULT_RANK = 4
DEFAULT_STEPS = 200


@dataclass
class JointInversion:
    """``latents`` (K, n, D); ``psnr_db`` (K, n) of each image; ``info`` (loss history, seconds)."""

    latents: torch.Tensor
    psnr_db: torch.Tensor
    info: dict[str, Any]


def joint_invert(
    generator,
    images: torch.Tensor,
    init: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    rank: int = DEFAULT_RANK,
    steps: int = DEFAULT_STEPS,
    lr: float = 0.01,
    gradient_weight: float = 0.5,
    prior_weight: float = 0.01,
    progress: bool = False,
) -> JointInversion:
    """Invert ``images`` (K, n, 3, R, R) in [-1, 1] as K sequences sharing an r-dimensional path.

    ``init`` (K, n, D) are per-image inversions in the generator's z (the start), ``values``
    (n,) the factor's value per step (the first direction of ``W`` is then the least-squares
    line). Minimises the inversion's loss (pixels + image gradients, the z prior) summed over
    all images with Adam for ``steps`` steps (learning rate ``lr``, cosine decay), keeping the
    best. Deterministic: no random draws. Raises TlganError for mismatched shapes or a rank
    below 1.
    """
    from tlgan.delta.train import change_basis
    from tlgan.inversion.encoder import frozen, psnr_db
    from tlgan.inversion.losses import reconstruction_loss
    from tlgan.inversion.optimize import shell_prior

    images = torch.as_tensor(images).float()
    init = torch.as_tensor(init).float()
    if images.ndim != 5 or init.ndim != 3 or images.shape[:2] != init.shape[:2]:
        raise TlganError(
            f"joint inversion needs images (K, n, 3, R, R) and start latents (K, n, D) of the same K and n; "
            f"got {tuple(images.shape)} and {tuple(init.shape)}"
        )
    if int(rank) < 1:
        raise TlganError(f"the shared path needs a rank of at least 1, not {rank}")
    k, n, d = init.shape
    vals = torch.arange(n, dtype=torch.float64) if values is None else torch.as_tensor(values).double()
    device = generator.device
    basis = change_basis([init], int(rank), [vals], path=True)  # (r, D)
    centre = init.mean(1)  # (K, D)
    coords = (init - centre[:, None]) @ basis.T  # (K, n, r)
    params = [p.to(device).clone().requires_grad_(True) for p in (centre, basis, coords)]
    targets = images.flatten(0, 1).to(device)
    opt = torch.optim.Adam(params, lr=lr)
    t0 = time.perf_counter()
    history: list[float] = []

    def latents_of(c, w, h):
        return (c[:, None] + h @ w).reshape(k * n, d)

    with frozen(generator):
        recon = reconstruction_loss(targets, gradient_weight=gradient_weight)

        def loss_of(x):
            loss = recon(generator.synthesize(x, "z"))
            return loss + prior_weight * shell_prior(x) if prior_weight > 0 else loss

        with torch.no_grad():
            best_loss = float(loss_of(latents_of(*params)).mean())
        best = latents_of(*params).detach().clone()
        start_loss = best_loss
        for step in tqdm(
            range(steps), desc="inverting sequences jointly", disable=None if progress else True
        ):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(step / max(1, steps) * torch.pi))).item()
            x = latents_of(*params)
            loss = loss_of(x).mean()
            if loss.item() < best_loss:
                best_loss, best = loss.item(), x.detach().clone()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(round(loss.item(), 6))
        with torch.no_grad():
            x = latents_of(*params)
            loss = float(loss_of(x).mean())
            if loss < best_loss:
                best_loss, best = loss, x.detach().clone()
            psnr = psnr_db(generator.synthesize(best, "z").float().cpu(), targets.cpu())
    info = {
        "rank": int(rank),
        "steps": int(steps),
        "lr": float(lr),
        "start_loss": round(start_loss, 6),
        "loss": round(best_loss, 6),
        "seconds": round(time.perf_counter() - t0, 2),
        "history": history,
    }
    log.info(
        "joint inversion of %d sequences x %d steps: loss %.4f -> %.4f, PSNR %.2f dB",
        k,
        n,
        start_loss,
        best_loss,
        float(psnr.mean()),
    )
    return JointInversion(latents=best.cpu().reshape(k, n, d), psnr_db=psnr.reshape(k, n), info=info)


def joint_latents(
    sequences,
    generator,
    per_image: torch.Tensor,
    *,
    rank: int = DEFAULT_RANK,
    steps: int = DEFAULT_STEPS,
    cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """:func:`joint_invert` of a sequence folder (a :class:`~tlgan.delta.sequences.SequenceSet`)
    from its per-image latents ``per_image`` (K, n, D); (K, n, D).

    Kept in ``JOINT_FILE`` beside the images and reused while the per-image latents (by
    content), the generator (by name) and the settings stay the same.
    """
    import hashlib

    from tlgan.io import load_tensors, save_tensors

    per_image = torch.as_tensor(per_image).float()
    key = {
        "format": JOINT_FORMAT,
        "generator": generator.name,
        "rank": int(rank),
        "steps": int(steps),
        "start": hashlib.sha256(per_image.contiguous().numpy().tobytes()).hexdigest()[:16],
    }
    path = sequences.root / JOINT_FILE
    if path.is_file():
        tensors, meta = load_tensors(path)
        if {k: meta.get(k) for k in key} == key and tuple(tensors["latents"].shape) == tuple(per_image.shape):
            return tensors["latents"].float()
    images = sequences.images(generator.img_resolution)
    result = joint_invert(
        generator,
        images,
        per_image,
        torch.tensor(sequences.values),
        rank=rank,
        steps=steps,
        progress=progress,
    )
    if cache:
        info = {k: v for k, v in result.info.items() if k != "history"}
        save_tensors(path, {"latents": result.latents, "psnr_db": result.psnr_db}, {**key, "info": info})
    return result.latents


__all__ = [
    "JointInversion",
    "joint_invert",
    "joint_latents",
    "JOINT_FILE",
    "JOINT_FORMAT",
    "DEFAULT_RANK",
    "DEFAULT_STEPS",
]
