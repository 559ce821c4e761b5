"""Disentangling axes: move along one attribute while holding others fixed.

Attribute axes found independently are correlated (in CelebA, "beard" and "male" point in
similar directions), so moving along one also moves the others. Holding a set of attributes
fixed means moving only within the subspace orthogonal to their axes: the direction is
projected off the span of the locked axes and renormalised. For one locked axis this is
InterFaceGAN's conditional boundary ``(u - (u.v) v) / |u - (u.v) v|``; for several it equals
TL-GAN's Gram-Schmidt over the locked set (the result depends on the span only, not on the
order or on whether the locked axes are orthogonal to each other).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError


def _as_float64(values, name: str) -> torch.Tensor:
    if isinstance(values, FeatureAxes):
        values = values.vectors
    values = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if not values.is_floating_point():
        values = values.float()
    values = values.detach().to("cpu", torch.float64)
    if not torch.isfinite(values).all():
        raise TlganError(f"{name} holds NaN or infinite values")
    return values


def locked_basis(locked, rtol: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis (R, D) float64 of the span of the rows of ``locked`` (K, D).

    Computed by SVD; singular values below ``rtol`` times the largest are treated as zero, so
    nearly parallel (or zero) locked axes add no spurious directions. R <= K.
    """
    locked = _as_float64(locked, "locked axes")
    if locked.ndim == 1:
        locked = locked[None]
    if locked.ndim != 2:
        raise TlganError(f"locked axes must be (K, D); got shape {tuple(locked.shape)}")
    if locked.shape[0] == 0:
        return locked.new_zeros(0, locked.shape[1])
    _, singular, vh = torch.linalg.svd(locked, full_matrices=False)
    if singular.numel() == 0 or float(singular[0]) == 0.0:
        return locked.new_zeros(0, locked.shape[1])
    rank = int((singular > rtol * singular[0]).sum())
    return vh[:rank]


def project_out(direction, locked, rtol: float = 1e-6, eps: float = 1e-6) -> torch.Tensor:
    """The unit component of ``direction`` (D,) orthogonal to the span of ``locked`` (K, D).

    ``direction`` need not be unit length. The result has ``direction``'s dtype (float32 for
    float32 input) and is computed in float64. Raises TlganError when ``direction`` (nearly) lies
    inside the locked span, i.e. when less than ``eps`` of its length remains: such an attribute
    cannot move while the locked ones stay fixed.
    """
    out_dtype = (
        direction.dtype
        if isinstance(direction, torch.Tensor) and direction.is_floating_point()
        else torch.float32
    )
    vec = _as_float64(direction, "direction")
    if vec.ndim != 1:
        raise TlganError(f"direction must be a vector (D,); got shape {tuple(vec.shape)}")
    norm = float(vec.norm())
    if norm == 0.0:
        raise TlganError("direction is the zero vector; it has no orientation to keep")
    basis = locked_basis(locked, rtol)
    if basis.shape[1] != vec.shape[0]:
        raise TlganError(f"direction has size {vec.shape[0]} but the locked axes have size {basis.shape[1]}")
    residual = vec - basis.T @ (basis @ vec)
    # A second pass removes what rounding left of the locked components.
    residual = residual - basis.T @ (basis @ residual)
    remaining = float(residual.norm())
    if remaining <= eps * norm:
        raise TlganError(
            "the direction lies inside the span of the locked axes (only "
            f"{remaining / norm:.1e} of it is left after projecting them out), so it cannot move while "
            "they stay fixed; unlock one of them"
        )
    return (residual / remaining).to(out_dtype)


def disentangle(axes: FeatureAxes, locks: Sequence[str]) -> FeatureAxes:
    """Axes made orthogonal to the locked ones.

    Every axis not in ``locks`` is projected off all locked axes; a locked axis itself is
    projected off the *other* locked axes (so moving a locked attribute on purpose still works
    and leaves the rest of the locked set fixed). Metrics are kept; ``info["locks"]`` records the
    locks. Unknown lock names raise TlganError with the close matches.
    """
    if isinstance(locks, str):
        locks = [locks]
    locks = list(dict.fromkeys(str(name) for name in locks))
    index = {name: axes.index(name) for name in locks}  # raises "unknown attribute ...; did you mean ...?"
    vectors = axes.vectors.clone()
    for i, name in enumerate(axes.attributes):
        others = [index[lock] for lock in locks if lock != name]
        if not others:
            continue
        try:
            vectors[i] = project_out(axes.vectors[i], axes.vectors[others])
        except TlganError as exc:
            raise TlganError(
                f"cannot disentangle {name!r} from {', '.join(repr(lock) for lock in locks if lock != name)}: "
                f"{exc}"
            ) from None
    info = dict(axes.info)
    info["locks"] = locks
    return FeatureAxes(
        vectors,
        list(axes.attributes),
        space=axes.space,
        generator=axes.generator,
        method=axes.method,
        metrics={k: dict(v) for k, v in axes.metrics.items()},
        info=info,
    )


def cosine_matrix(vectors) -> torch.Tensor:
    """Cosine similarity of every pair of rows of ``vectors`` (A, D): an (A, A) matrix.

    Rows need not be unit length; the result is float32 with exact ones on the diagonal.
    Accepts a tensor, an array or a FeatureAxes. Zero rows raise TlganError.
    """
    vecs = _as_float64(vectors, "vectors")
    if vecs.ndim != 2:
        raise TlganError(f"vectors must be (A, D); got shape {tuple(vecs.shape)}")
    norms = vecs.norm(dim=1)
    zero = torch.nonzero(norms == 0).flatten().tolist()
    if zero:
        raise TlganError(f"row(s) {zero} are zero vectors; a cosine needs a direction")
    unit = vecs / norms[:, None]
    cos = (unit @ unit.T).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    return cos.float()


__all__ = ["cosine_matrix", "disentangle", "locked_basis", "project_out"]
