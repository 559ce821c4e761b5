"""``svm``: InterFaceGAN's boundaries, a linear SVM per attribute on the top and bottom samples by score."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tlgan.axes.finders.common import (
    FINDERS,
    AxisFinder,
    _blas_threads,
    _numpy,
    _ordered_map,
    _thread_count,
    check_finite_values,
    check_fit_inputs,
    check_varying_scores,
)
from tlgan.errors import TlganError

log = logging.getLogger(__name__)


@dataclass
class TopBottomSplit:
    """InterFaceGAN's training data for one attribute (indices into the N samples).

    ``train_index``/``val_index`` hold the chosen top (label +1) and bottom (label -1) samples,
    ``rest_index`` every sample in neither set.
    """

    train_index: torch.Tensor
    train_label: torch.Tensor
    val_index: torch.Tensor
    val_label: torch.Tensor
    rest_index: torch.Tensor


def top_bottom_split(
    scores: torch.Tensor,
    ratio: float = 0.02,
    val_fraction: float = 0.3,
    seed: int = 0,
    column: int = 0,
    name: str = "attribute",
) -> TopBottomSplit:
    """Split one attribute's samples as InterFaceGAN does.

    Takes the ``k = int(N * ratio)`` highest and ``k`` lowest ``scores`` (N,) (ties broken by
    sample order), shuffles each set with a generator seeded by (seed, column), and holds out
    ``round(k * val_fraction)`` of each for validation.
    """
    scores = torch.as_tensor(scores).reshape(-1)
    n = len(scores)
    ratio, val_fraction = float(ratio), float(val_fraction)
    if not 0.0 < ratio <= 0.5:
        raise TlganError(
            f"ratio must be in (0, 0.5] (the top and the bottom fraction of samples); got {ratio}"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise TlganError(f"val_fraction must be in [0, 1); got {val_fraction}")
    k = int(n * ratio)
    n_val = int(round(k * val_fraction))
    n_train = k - n_val
    if k < 2 or n_train < 1:
        need = math.ceil(max(2, 1 + n_val) / ratio)
        raise TlganError(
            f"too few samples for {name!r}: N={n} with ratio={ratio} gives {k} top and {k} bottom "
            f"samples ({n_train} per class to train on); use at least N={need} samples or a larger ratio"
        )
    order = torch.argsort(scores, descending=True, stable=True)
    top, bottom = order[:k], order[n - k :]
    rng = np.random.default_rng([int(seed), int(column)])
    top = top[torch.from_numpy(rng.permutation(k))]
    bottom = bottom[torch.from_numpy(rng.permutation(k))]
    ones = torch.ones(n_train, dtype=torch.float64)
    vals = torch.ones(n_val, dtype=torch.float64)
    return TopBottomSplit(
        train_index=torch.cat([top[:n_train], bottom[:n_train]]),
        train_label=torch.cat([ones, -ones]),
        val_index=torch.cat([top[n_train:], bottom[n_train:]]),
        val_label=torch.cat([vals, -vals]),
        rest_index=order[k : n - k],
    )


@dataclass
class SVMSolution:
    """A linear SVM: decision function ``x @ weight + bias`` (weight (D,) float64 array).

    ``n_support`` counts samples with a non-negligible dual weight; ``iterations`` are the
    interior-point iterations of the last solve, ``rounds`` the working-set rounds, ``gap``
    the final relative duality gap.
    """

    weight: np.ndarray
    bias: float
    n_support: int
    iterations: int
    rounds: int
    gap: float


def _duality_gap(
    z: np.ndarray, y: np.ndarray, alpha: np.ndarray, b: float, C: float
) -> tuple[float, bool, np.ndarray, float]:
    """(relative duality gap, whether y^T alpha = 0 holds, margins y_i x_i . w, y^T alpha) of a dual point.

    ``z`` (n, D) holds y_i x_i; w = z^T alpha. The gap is (primal - dual) / max(1, |primal|), the
    primal objective taken at (w, b).
    """
    w = z.T @ alpha
    margin = z @ w  # y_i x_i . w, i.e. (Q alpha)_i
    rp = float(y @ alpha)
    ww = float(w @ w)
    primal = 0.5 * ww + C * float(np.maximum(1.0 - margin - y * b, 0.0).sum())
    dual = float(alpha.sum()) - 0.5 * ww
    feasible = abs(rp) <= 1e-8 * max(1.0, float(alpha.sum()))
    return (primal - dual) / max(1.0, abs(primal)), feasible, margin, rp


def _sample_space_is_cheaper(n: int, width: int) -> bool:
    """Whether :func:`_svm_ipm`'s Newton step is cheaper as an n x n system than as a width x width one."""
    return n**3 / 3 < n * width**2 + width**3 / 3


def _svm_ipm(
    rows: np.ndarray, C: float, tol: float, max_iter: int, sample_space: bool | None = None
) -> tuple[np.ndarray, float, int, float]:
    """Mehrotra predictor-corrector interior-point method for the linear SVM dual.

    ``rows`` (n, D+1) float64 holds y_i * [x_i, 1]. Solves

        min_a  1/2 |Z^T a|^2 - sum(a)   s.t.  y^T a = 0,  0 <= a <= C     (Z = rows[:, :D])

    whose equality multiplier is the intercept b. Each Newton system is reduced to the
    (D+1) x (D+1) positive definite system (P + rows^T E rows) [dw; db] = ..., with
    P = diag(1, ..., 1, 0) and E = diag(1 / (s/a + r/(C-a))), so an iteration costs one weighted
    Gram matrix, O(n D^2), however many samples end up support vectors. Stops when the duality
    gap relative to the primal objective is <= ``tol``.

    With few samples for their size (n^3 / 3 < n (D+1)^2 + (D+1)^3 / 3, e.g. InterFaceGAN's 560
    training samples of 512-d latents; or ``sample_space=True``) the same Newton step is solved in the
    sample space instead: with Q = Z Z^T computed once, (Q + E^-1) da + y db = g and y^T da = -rp
    take one n x n Cholesky factorisation per iteration and no Gram matrix.
    Returns (alpha (n,), b, iterations, relative gap of the returned point).
    """
    from scipy.linalg.lapack import get_lapack_funcs

    n, width = rows.shape
    dim = width - 1
    y = rows[:, dim]
    z = rows[:, :dim]
    # Start inside the box at the scale that maximises the dual along a constant alpha,
    # balanced so that y^T alpha = 0, with equal complementarity products.
    total = z.sum(0)
    level = min(0.5 * C, n / max(float(total @ total), 1e-300))
    n_pos = float((y > 0).sum())
    n_neg = n - n_pos
    alpha = np.where(y > 0, level * min(1.0, n_neg / n_pos), level * min(1.0, n_pos / n_neg))
    grad = z @ (z.T @ alpha) - 1.0
    mu0 = float(
        (alpha @ (np.maximum(-grad, 0.0) + 1.0) + (C - alpha) @ (np.maximum(grad, 0.0) + 1.0)) / (2 * n)
    )
    s = mu0 / alpha
    r = mu0 / (C - alpha)
    b = 0.0
    if sample_space is None:
        sample_space = _sample_space_is_cheaper(n, width)
    # LAPACK's Cholesky factorisation and solve, called directly: SciPy's cho_factor/cho_solve
    # wrappers cost as much again as the solves at these sizes.
    potrf, potrs = get_lapack_funcs(("potrf", "potrs"), (rows,))
    if sample_space:
        kernel = z @ z.T  # Q = Z Z^T (n, n), once
        system = np.empty_like(kernel)  # reused: a fresh n x n array per iteration costs page faults
        diagonal = system.reshape(-1)[:: n + 1]  # a view of system's diagonal
    else:
        scaled = np.empty_like(rows)
        diag = np.arange(dim)
    best: tuple[float, np.ndarray, float] = (math.inf, alpha, b)
    gap = math.inf
    it = 0
    for it in range(max_iter + 1):
        t = C - alpha
        gap, feasible, margin, rp = _duality_gap(z, y, alpha, b, C)
        rd = margin - 1.0 + y * b - s + r
        if feasible and gap < best[0]:
            best = (gap, alpha, b)
        if (feasible and gap <= tol) or it == max_iter:
            break
        mu = float((alpha @ s + t @ r) / (2 * n))
        e = 1.0 / (s / alpha + r / t)
        if sample_space:
            np.copyto(system, kernel)
            diagonal += 1.0 / e
        else:
            np.multiply(rows, np.sqrt(e)[:, None], out=scaled)
            system = scaled.T @ scaled
            system[diag, diag] += 1.0
        # The transpose of the symmetric system is the same matrix in Fortran order, which
        # LAPACK factorises in place, without copies (clean=0: the other triangle is not zeroed).
        factor, info = potrf(system.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            log.debug(
                "svm: Newton system lost definiteness at iteration %d (gap %.2e); keeping the best point",
                it,
                gap,
            )
            break
        newton = _NewtonSystem(potrs, factor, rows, e, rp, sample_space)
        # Affine-scaling predictor: complementarity right-hand sides -alpha s and -t r.
        rc1, rc2 = -alpha * s, -t * r
        da, db = newton.direction(-rd + rc1 / alpha - rc2 / t)
        ds, dr = (rc1 - s * da) / alpha, (rc2 + r * da) / t
        step = _longest_step(((alpha, da), (t, -da), (s, ds), (r, dr)))
        mu_aff = float(((alpha + step * da) @ (s + step * ds) + (t - step * da) @ (r + step * dr)) / (2 * n))
        sigma = (mu_aff / mu) ** 3
        # Corrector, centred at sigma * mu.
        rc1, rc2 = sigma * mu - alpha * s - da * ds, sigma * mu - t * r + da * dr
        da, db = newton.direction(-rd + rc1 / alpha - rc2 / t)
        ds, dr = (rc1 - s * da) / alpha, (rc2 + r * da) / t
        step = min(1.0, 0.995 * _longest_step(((alpha, da), (t, -da), (s, ds), (r, dr))))
        alpha = alpha + step * da
        s = s + step * ds
        r = r + step * dr
        b = b + step * db
    if best[0] < math.inf:
        gap, alpha, b = best
    return alpha, b, it, gap


class _NewtonSystem:
    """One interior-point iteration's reduced Newton system, factorised once (``factor``, upper
    Cholesky factor from LAPACK's potrf) and solved for the predictor's and the corrector's
    right-hand sides. See :func:`_svm_ipm` for the two forms (latent space, sample space)."""

    def __init__(
        self, potrs, factor: np.ndarray, rows: np.ndarray, e: np.ndarray, rp: float, sample_space: bool
    ):
        self.potrs, self.factor, self.rows, self.e, self.rp = potrs, factor, rows, e, rp
        self.sample_space = sample_space
        if sample_space:
            y = rows[:, -1]
            self.toward_y = self.solve(y)
            self.y_toward_y = float(y @ self.toward_y)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self.potrs(self.factor, rhs, lower=0)[0]

    def direction(self, g: np.ndarray) -> tuple[np.ndarray, float]:
        """(da (n,), db) for the dual residual ``g`` (n,)."""
        rows = self.rows
        if self.sample_space:
            u = self.solve(g)
            db = (float(rows[:, -1] @ u) + self.rp) / self.y_toward_y
            return u - db * self.toward_y, db
        rhs = rows.T @ (self.e * g)
        rhs[-1] += self.rp
        v = self.solve(rhs)
        return self.e * (g - rows @ v), float(v[-1])


def _longest_step(pairs) -> float:
    """The largest step in (0, 1] that keeps every ``value + step * delta`` of ``pairs`` non-negative."""
    step = 1.0
    for value, delta in pairs:
        neg = delta < 0
        if neg.any():
            step = min(step, float((-value[neg] / delta[neg]).min()))
    return step


def fit_linear_svm(
    x,
    y,
    C: float = 1.0,
    tol: float = 1e-7,
    max_iter: int = 100,
    working_set: bool = True,
    kkt_tol: float = 1e-3,
) -> SVMSolution:
    """Linear soft-margin SVM with an unregularised intercept (scikit-learn's SVC(kernel="linear")).

    Minimises ``1/2 |w|^2 + C * sum_i max(0, 1 - y_i (w . x_i + b))`` for ``x`` (n, D) and labels
    ``y`` (n,) in {-1, +1}, in float64 on the CPU, by the interior-point method of
    :func:`_svm_ipm` (stopping at relative duality gap ``tol``).

    With ``working_set`` the solver first runs, loosely, on a subset: the samples with the
    smallest margins under a diagonal linear discriminant. Then it solves tightly on every sample
    with margin below 1.1 under that solution plus every sample that violates its margin by more
    than ``kkt_tol``, and repeats until no sample outside the subset violates its margin. Only
    samples near the margin can be support vectors, so the subsets stay small, and the answer
    is the solution for all samples.
    """
    x, y = _check_svm_inputs(x, y, C)
    with _blas_threads(1):  # many small BLAS calls: threads cost more than they give
        return _fit_linear_svm(x, y, float(C), float(tol), int(max_iter), bool(working_set), float(kkt_tol))


def _check_svm_inputs(x, y, C: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(_numpy(x) if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    y = np.asarray(_numpy(y) if isinstance(y, torch.Tensor) else y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise TlganError(f"fit_linear_svm needs x (n, D) and y (n,); got {x.shape} and {y.shape}")
    if not (np.isin(y, (-1.0, 1.0)).all() and (y > 0).any() and (y < 0).any()):
        raise TlganError("fit_linear_svm needs labels in {-1, +1} with both classes present")
    if not np.isfinite(x).all():
        raise TlganError("fit_linear_svm: x holds NaN or infinite values")
    if not float(C) > 0:
        raise TlganError(f"C must be > 0 (got {C})")
    return x, y


def _fit_linear_svm(
    x: np.ndarray, y: np.ndarray, C: float, tol: float, max_iter: int, working_set: bool, kkt_tol: float
) -> SVMSolution:
    """:func:`fit_linear_svm` on checked inputs (``x`` float32 or float64)."""
    n, dim = x.shape
    rows = np.concatenate([y[:, None] * x, y[:, None]], axis=1)  # y_i * [x_i, 1], float64
    z = rows[:, :dim]
    everyone = np.arange(n)
    first = max(1000, n // 5)
    if not working_set or n <= first + dim:
        members = everyone
    else:
        members = _lda_order(x, y)[:first]
    tight = len(members) == n
    rounds = 0
    while True:
        rounds += 1
        sub = rows[members]
        if not ((sub[:, dim] > 0).any() and (sub[:, dim] < 0).any()):
            members, sub, tight = everyone, rows, True
        # The first, loose solve only has to find the neighbourhood of the margin.
        alpha, b, iterations, gap = _svm_ipm(sub, C, tol if tight else 1e-3, max_iter)
        w = sub[:, :dim].T @ alpha
        if len(members) == n:
            break
        margin = z @ w + y * b
        outside = np.ones(n, dtype=bool)
        outside[members] = False
        violated = outside & (margin < 1.0 - kkt_tol)
        if tight and not violated.any():
            break
        tight = True
        members = np.flatnonzero((margin < 1.1) | violated)
        if rounds >= 8 or len(members) > 0.8 * n:  # not settling, or no longer worth it: solve on everything
            members = everyone
    if gap > 100 * max(tol, 1e-6):
        log.warning(
            "svm: stopped at relative duality gap %.1e (asked for %.0e); the axis may be slightly off",
            gap,
            tol,
        )
    return SVMSolution(
        weight=w,
        bias=float(b),
        n_support=_n_support(alpha),
        iterations=int(iterations),
        rounds=rounds,
        gap=float(gap),
    )


def _n_support(alpha: np.ndarray) -> int:
    """Samples with a non-negligible dual weight."""
    return int((alpha > 1e-6 * float(alpha.max())).sum())


def _lda_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample indices by increasing margin under a diagonal linear discriminant (O(n D)).

    The class-mean difference over the per-dimension variance: a cheap classifier whose
    smallest margins rank the samples well enough to guess the support vectors.
    """
    x = np.asarray(x, dtype=np.float64)
    pos, neg = x[y > 0], x[y < 0]
    variance = 0.5 * (pos.var(0) + neg.var(0)) + 1e-12 * (1.0 + x.var(0).max())
    direction = (pos.mean(0) - neg.mean(0)) / variance
    offset = -0.5 * float((pos.mean(0) + neg.mean(0)) @ direction)
    return np.argsort(y * (x @ direction + offset), kind="stable")


@FINDERS.register("svm", "linear SVM on the top/bottom samples by score (InterFaceGAN)")
class SVMFinder(AxisFinder):
    """InterFaceGAN's boundaries: per attribute, a linear SVM on the extreme samples.

    For each attribute: the top and bottom ``ratio`` of samples by score become the positive
    and negative class (see :func:`top_bottom_split`), ``val_fraction`` of each is held out,
    and a linear SVM (hinge loss, ``C``, unregularised intercept: the problem of scikit-learn's
    ``SVC(kernel="linear", C=C)``) is fitted on the rest by :func:`fit_linear_svm`. The axis is
    the unit normal of the separating hyperplane, pointing to high scores. Runs on the CPU,
    attributes side by side on ``torch.get_num_threads()`` threads when each training set is
    large enough for that to pay (one after another for InterFaceGAN's usual 560 samples).

    Args:
        ratio: fraction of samples taken from each end (InterFaceGAN: 0.02).
        val_fraction: fraction of the chosen samples held out (InterFaceGAN: 0.3).
        C: hinge-loss weight.
        seed: seed of the train/validation shuffles (attribute in column j uses (seed, j)).
        tol: relative duality gap at which the solver stops.

    Metrics per attribute: ``val_accuracy`` (held-out top/bottom samples; absent when
    val_fraction gives none), ``remaining_accuracy`` (sign of the decision function vs sign of
    the logit on every sample in neither set), ``n_train``, ``n_support``.
    """

    name = "svm"

    def __init__(
        self, ratio: float = 0.02, val_fraction: float = 0.3, C: float = 1.0, seed: int = 0, tol: float = 1e-6
    ):
        self.ratio = ratio
        self.val_fraction = val_fraction
        self.C = C
        self.seed = seed
        self.tol = tol

    def fit(self, latents, scores, attributes: Sequence[str] | None = None) -> SVMFinder:
        # The latents are tested for NaN/inf where they are used (training rows, decision values),
        # not in a pass of their own.
        latents, scores, names = check_fit_inputs(latents, scores, attributes, values=False)
        check_varying_scores(scores, names)
        if not float(self.C) > 0:
            raise TlganError(f"C must be > 0 (got {self.C})")
        splits = [
            top_bottom_split(scores[:, i], self.ratio, self.val_fraction, self.seed, column=i, name=a)
            for i, a in enumerate(names)
        ]
        x_all, s_all = _numpy(latents), _numpy(scores)

        def solve(split: TopBottomSplit) -> SVMSolution:
            x = x_all[_numpy(split.train_index)]
            if not np.isfinite(x).all():
                check_finite_values(latents, scores)  # raises, naming the rows
            y = _numpy(split.train_label).astype(np.float64)
            return _fit_linear_svm(x, y, float(self.C), float(self.tol), 100, True, 1e-3)

        # A small training set (InterFaceGAN's 560 samples of 20,000) is solved in the sample space
        # by many small NumPy and LAPACK calls that hold the GIL: threads would only take turns
        # (measured 1.4x slower on 2 cores). Larger ones spend their time in BLAS, which runs beside
        # other threads.
        small = _sample_space_is_cheaper(len(splits[0].train_index), latents.shape[1] + 1)
        with _blas_threads(1):
            solutions = list(
                tqdm(
                    _ordered_map(solve, splits, 1 if small else _thread_count()),
                    total=len(splits),
                    desc="svm",
                    unit="attr",
                    leave=False,
                    disable=None,
                )
            )
        coef = np.stack([solution.weight for solution in solutions])
        bias = np.array([solution.bias for solution in solutions])
        # Decision values of every sample for every attribute in one product (float32 is ample for a sign).
        decision = x_all @ coef.T.astype(x_all.dtype) + bias.astype(x_all.dtype)
        if not np.isfinite(decision).all():  # a NaN/inf latent outside the training rows
            check_finite_values(latents, scores)
        metrics: dict[str, dict[str, float]] = {}
        for i, (a, split, solution) in enumerate(zip(names, splits, solutions, strict=True)):
            metrics[a] = {"n_train": int(len(split.train_index)), "n_support": int(solution.n_support)}
            if len(split.val_index):
                pred = decision[_numpy(split.val_index), i]
                metrics[a]["val_accuracy"] = float(((pred > 0) == (_numpy(split.val_label) > 0)).mean())
            if len(split.rest_index):
                rest = _numpy(split.rest_index)
                metrics[a]["remaining_accuracy"] = float(
                    ((decision[rest, i] > 0) == (s_all[rest, i] > 0)).mean()
                )
            log.debug(
                "svm %s: %d support vectors, %d rounds, gap %.1e",
                a,
                solution.n_support,
                solution.rounds,
                solution.gap,
            )
        self._set_fitted(torch.from_numpy(coef), torch.from_numpy(bias), names, metrics, len(latents))
        return self
