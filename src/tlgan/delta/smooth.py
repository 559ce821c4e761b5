"""A smooth shared path: the training sequences' mean path as a polynomial in the factor value.

Every sequence of a set shows the same change in the same steps, so what the sequences
share is their mean path over sequences (:func:`tlgan.delta.train.mean_path`); it still
carries each inversion's wander, shrunk by 1 / sqrt(K) for K sequences. A factor that moves
smoothly moves the latent along a smooth curve of its value, which a low-degree polynomial
holds, while the wander left in the mean path is independent from step to step. Replacing
the mean path by its least-squares polynomial of degree p in the factor value keeps the
curve and removes the part of the noise the polynomial cannot follow (of the n - 1 degrees
of freedom per coordinate of a centred n-step path, p remain). Each sequence keeps its own
deviation from the mean path, so a decoder that reads the face still sees it.

Degree 1 is the least-squares line itself (its slope is unchanged by the smoothing of any
degree, since the line is one of the polynomial's terms); ``"auto"`` picks the smallest
degree of at least 2 whose misfit to the mean path is within what the wander alone would
leave (:func:`choose_degree`), the wander measured on each sequence's own deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tlgan.errors import TlganError

#: The smallest degree "auto" picks: degree 1 is the straight line, which a learned edit is
#: meant to improve on.
MIN_AUTO_DEGREE = 2


def check_degree(degree) -> int | str:
    """``degree`` as stored in settings: 0 (off), a positive int, or ``"auto"``.

    Raises TlganError for anything else (a negative number, a fraction, other text).
    """
    if isinstance(degree, str):
        text = degree.strip().lower()
        if text == "auto":
            return "auto"
        try:
            degree = int(text)
        except ValueError:
            degree = None
    if isinstance(degree, bool) or degree is None or int(degree) != degree or int(degree) < 0:
        raise TlganError(f"path degree must be 0 (off), a positive whole number or 'auto', not {degree!r}")
    return int(degree)


def _design(values: torch.Tensor, degree: int) -> torch.Tensor:
    """Centred powers 1..degree of the values scaled to [-1, 1]: (n, degree), float64."""
    v = torch.as_tensor(values, dtype=torch.float64)
    half = float((v.max() - v.min()) / 2)
    x = (v - (v.max() + v.min()) / 2) / max(half, 1e-12)
    cols = torch.stack([x**k for k in range(1, degree + 1)], dim=1)
    return cols - cols.mean(0)


def _fit(path: torch.Tensor, values: torch.Tensor, degree: int) -> torch.Tensor:
    """The least-squares polynomial of ``degree`` through the centred path (n, D): (n, D)."""
    design = _design(values, degree)
    coef = torch.linalg.lstsq(design, path).solution
    return design @ coef


def misfit_ratios(latents: torch.Tensor, values: Sequence[float] | torch.Tensor) -> dict[int, float]:
    """For each degree p = 1 .. n - 2: the mean path's squared misfit to its polynomial of degree
    p, over what the wander alone would leave of it.

    The wander's share is measured on the sequences themselves: each sequence's own deviation
    from the mean path, fitted by the same polynomial, leaves a misfit whose mean over the K
    sequences, divided by K - 1, is what the noise in the mean path leaves (each deviation
    carries K / (K - 1) times the noise of one sequence, the mean path 1 / K of it). So noise
    that is correlated from step to step (an inversion that drifts along a sequence) is
    counted as it is. Near 1: the rest of the path is noise; well above 1: the degree misses
    part of the curve.

    ``latents`` (K, n, *shape) with K >= 2 (one sequence shows no wander to compare with).
    """
    x = torch.as_tensor(latents, dtype=torch.float64)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    k, n, _ = x.shape
    if k < 2:
        raise TlganError("choosing the path degree needs at least two sequences; give the degree instead")
    centred = x - x.mean(dim=1, keepdim=True)
    path = centred.mean(0)
    own = centred - path  # (K, n, D)
    vals = torch.as_tensor(values, dtype=torch.float64)
    out = {}
    for p in range(1, n - 1):
        rss = float((path - _fit(path, vals, p)).pow(2).sum())
        noise = sum(float((dev - _fit(dev, vals, p)).pow(2).sum()) for dev in own) / (k * (k - 1))
        out[p] = rss / max(noise, 1e-30)
    return out


def choose_degree(latents: torch.Tensor, values: Sequence[float] | torch.Tensor) -> int:
    """The smallest degree p >= :data:`MIN_AUTO_DEGREE` whose misfit ratio
    (:func:`misfit_ratios`) is within what noise alone gives: at most
    ``1 + 2 sqrt(2 / ((n - 1 - p) D))`` (two standard deviations of a chi-square over the
    degrees of freedom the misfit would have if every coordinate were independent; inversion
    noise gathers in fewer directions, so the true spread is wider and the rule errs towards
    a higher degree, i.e. less smoothing); n - 1 (no smoothing) when none is, or when the
    sequences are too short or too few to tell."""
    x = torch.as_tensor(latents)
    k, n = int(x.shape[0]), int(x.shape[1])
    if k < 2 or n - 1 <= MIN_AUTO_DEGREE:
        return max(n - 1, 1)
    d = x[0, 0].numel()
    for p, ratio in misfit_ratios(x, values).items():
        if p >= MIN_AUTO_DEGREE and ratio <= 1.0 + 2.0 * math.sqrt(2.0 / ((n - 1 - p) * d)):
            return p
    return n - 1


def smooth_paths(latents: torch.Tensor, values: Sequence[float] | torch.Tensor, degree: int) -> torch.Tensor:
    """``latents`` (K, n, *shape) with their mean path over sequences replaced by its polynomial
    of ``degree`` in ``values`` (n,); each sequence keeps its mean and its own deviation.

    Degree 0 or >= n - 1 returns the latents unchanged (a copy in their dtype). Same shape
    and dtype as ``latents``.
    """
    x = torch.as_tensor(latents)
    n = int(x.shape[1])
    degree = int(degree)
    if degree <= 0 or degree >= n - 1:
        return x.clone()
    flat = x.reshape(x.shape[0], n, -1).to(torch.float64)
    path = (flat - flat.mean(dim=1, keepdim=True)).mean(0)
    smooth = _fit(path, torch.as_tensor(values, dtype=torch.float64), degree)
    return (flat - path + smooth).to(x.dtype).reshape(x.shape)


__all__ = ["check_degree", "choose_degree", "misfit_ratios", "smooth_paths", "MIN_AUTO_DEGREE"]
