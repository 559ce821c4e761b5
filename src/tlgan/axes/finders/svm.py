"""``svm``: InterFaceGAN's boundaries, a linear SVM per attribute on the top and bottom samples by score."""

from __future__ import annotations

import logging
import math
import threading
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
    top, bottom, rest = _ends_in_stable_order(scores, k)
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
        rest_index=rest,
    )


def _ends_in_stable_order(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first k, last k, the rest) of the indices of ``scores`` in a stable descending sort, without sorting them all.

    The first and last k come in that sort's order; the rest in index order. Selecting the two
    ends (a partition, O(n)) and sorting only those costs a quarter of the whole sort at
    InterFaceGAN's 2 % of 20,000 samples. Ties at either cut are split as the stable sort
    splits them: the lower indices go first. Scores with NaN take the whole sort.
    """
    n = len(scores)
    values = scores.detach().cpu().numpy()
    if not np.isfinite(values).all():
        order = torch.argsort(scores, descending=True, stable=True)
        return order[:k], order[n - k :], order[k : n - k]

    def in_order(index: np.ndarray) -> np.ndarray:  # by descending score, ties by ascending index
        return index[np.lexsort((index, -values[index]))]

    high = np.partition(values, n - k)[n - k]  # the k-th highest score
    above = np.flatnonzero(values > high)
    top = in_order(np.concatenate([above, np.flatnonzero(values == high)[: k - len(above)]]))
    low = np.partition(values, k - 1)[k - 1]  # the k-th lowest score
    below = np.flatnonzero(values < low)
    ties = np.flatnonzero(values == low)
    bottom = in_order(np.concatenate([ties[len(ties) - (k - len(below)) :], below]))
    rest = np.ones(n, dtype=bool)
    rest[top] = False
    rest[bottom] = False
    return torch.from_numpy(top), torch.from_numpy(bottom), torch.from_numpy(np.flatnonzero(rest))


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


class _Scratch:
    """Work arrays kept from one solve to the next (one per thread), each grown when a solve needs more.

    InterFaceGAN's training set for 512-d latents makes every work array 2-3 MB. A fresh one is
    fresh memory from the system, and first touching it costs a page fault per 4 kB (about 4 us
    each on the 2-core machine of BENCHMARKS.md): a quarter of a 560-sample solve, when the
    arrays of the previous attribute's solve could simply be written over.
    """

    def __init__(self):
        self._flat: dict[tuple[str, str], np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape``, the same memory each time ``name`` is asked for."""
        size = int(np.prod(shape))
        key = (name, np.dtype(dtype).str)
        flat = self._flat.get(key)
        if flat is None or flat.size < size:
            flat = self._flat[key] = np.empty(size, dtype=dtype)
        return flat[:size].reshape(shape)


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
    rows: np.ndarray,
    C: float,
    tol: float,
    max_iter: int,
    sample_space: bool | None = None,
    scratch: _Scratch | None = None,
    kernel: np.ndarray | None = None,
    crossover: bool = True,
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
    take one n x n Cholesky factorisation per iteration and no Gram matrix; and once the gap is
    down to :data:`CROSSOVER_GAP`, the exact optimum on the support the iterate points to is
    tried (:func:`_solve_on_support`; not with ``crossover=False``) and returned if its gap is
    within ``tol``. ``kernel`` may hand in Q, if the caller has it.
    Its matrices are written into ``scratch``'s arrays (default: fresh ones).
    Returns (alpha (n,), b, iterations, relative gap of the returned point).
    """
    from scipy.linalg.blas import get_blas_funcs
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
    # LAPACK's Cholesky factorisation and BLAS's triangular solves, called directly: SciPy's
    # cho_factor/cho_solve wrappers cost as much again as the solves at these sizes, and for one
    # right-hand side two trsv calls take a third of the time of LAPACK's potrs (which goes
    # through the matrix-matrix trsm).
    potrf = get_lapack_funcs("potrf", (rows,))
    trsv = get_blas_funcs("trsv", (rows,))
    scratch = scratch if scratch is not None else _Scratch()
    if sample_space:
        if kernel is None:
            kernel = np.matmul(z, z.T, out=scratch.array("kernel", (n, n)))  # Q = Z Z^T, once (BLAS syrk)
        system = scratch.array("system", (n, n))
        diagonal = system.reshape(-1)[:: n + 1]  # a view of system's diagonal
    else:
        scaled = scratch.array("scaled", (n, width))
        system = scratch.array("system", (width, width))
        diag = np.arange(dim)
    best: tuple[float, np.ndarray, float] = (math.inf, alpha, b)
    gap = math.inf
    it = 0
    tried = False
    for it in range(max_iter + 1):
        t = C - alpha
        gap, feasible, margin, rp = _duality_gap(z, y, alpha, b, C)
        rd = margin - 1.0 + y * b - s + r
        if feasible and gap < best[0]:
            best = (gap, alpha, b)
        if (feasible and gap <= tol) or it == max_iter:
            break
        if crossover and sample_space and gap <= CROSSOVER_GAP and not tried:
            tried = True
            # At this gap the margins already tell the support apart (alpha_i > s_i would not yet).
            guess = _solve_on_support(
                kernel, y, margin + y * b < 1.0 + MARGIN_GUESS, C - alpha <= r, C, scratch
            )
            if guess is not None:
                guess_gap, guess_feasible = _duality_gap(z, y, guess[0], guess[1], C)[:2]
                if guess_feasible and guess_gap <= tol:
                    return guess[0], guess[1], it, guess_gap
        mu = float((alpha @ s + t @ r) / (2 * n))
        e = 1.0 / (s / alpha + r / t)
        if sample_space:
            np.copyto(system, kernel)
            diagonal += 1.0 / e
        else:
            np.multiply(rows, np.sqrt(e)[:, None], out=scaled)
            np.matmul(scaled.T, scaled, out=system)
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

        def solve(rhs: np.ndarray) -> np.ndarray:
            return trsv(factor, trsv(factor, rhs, trans=1), trans=0)  # U^T U x = rhs, U upper

        if sample_space:
            toward_y = solve(y)
            y_toward_y = float(y @ toward_y)

        def newton(rc1: np.ndarray, rc2: np.ndarray):
            g = -rd + rc1 / alpha - rc2 / t
            if sample_space:
                u = solve(g)
                db = (float(y @ u) + rp) / y_toward_y
                da = u - db * toward_y
                return da, db, (rc1 - s * da) / alpha, (rc2 + r * da) / t
            rhs = rows.T @ (e * g)
            rhs[dim] += rp
            v = solve(rhs)
            da = e * (g - rows @ v)
            return da, float(v[dim]), (rc1 - s * da) / alpha, (rc2 + r * da) / t

        def longest(da: np.ndarray, ds: np.ndarray, dr: np.ndarray) -> float:
            step = 1.0
            for value, delta in ((alpha, da), (t, -da), (s, ds), (r, dr)):
                neg = delta < 0
                if neg.any():
                    step = min(step, float((-value[neg] / delta[neg]).min()))
            return step

        da, db, ds, dr = newton(-alpha * s, -t * r)  # affine-scaling predictor
        step = longest(da, ds, dr)
        mu_aff = float(((alpha + step * da) @ (s + step * ds) + (t - step * da) @ (r + step * dr)) / (2 * n))
        sigma = (mu_aff / mu) ** 3
        da, db, ds, dr = newton(sigma * mu - alpha * s - da * ds, sigma * mu - t * r + da * dr)  # corrector
        step = min(1.0, 0.995 * longest(da, ds, dr))
        alpha = alpha + step * da
        s = s + step * ds
        r = r + step * dr
        b = b + step * db
    if best[0] < math.inf:
        gap, alpha, b = best
    return alpha, b, it, gap


CROSSOVER_GAP = 1e-3
"""Relative duality gap at which :func:`_svm_ipm` (in the sample space) tries once to solve exactly
on the support its iterate points to (:func:`_solve_on_support`), keeping that answer only if its
own gap is within the tolerance. On InterFaceGAN's 560-sample sets this ends the solve after 6
interior-point iterations instead of 8-9, with an exact optimum."""
MARGIN_GUESS = 3e-3
"""The guessed support: samples whose margin y_i (x_i . w + b) is below 1 + MARGIN_GUESS."""


def _solve_on_support(
    kernel: np.ndarray,
    y: np.ndarray,
    support: np.ndarray,
    at_bound: np.ndarray,
    C: float,
    scratch: _Scratch,
    rounds: int = 4,
) -> tuple[np.ndarray, float] | None:
    """The exact dual optimum from a guess of its support, corrected for up to ``rounds`` rounds; None if not found.

    ``support`` marks the samples guessed to have alpha > 0 and ``at_bound`` those among them
    guessed at alpha = C. With F the free samples and U those at C, the optimum satisfies
    y_i (x_i . w + b) = 1 on F and y^T alpha = 0, a linear system in (alpha_F, b) with the
    |F| x |F| matrix Q_FF: one Cholesky factorisation of a matrix about half the size of the
    interior-point method's. Where the answer breaks the KKT conditions, the guess is corrected
    as an active-set method would (a free alpha below 0 leaves the support, one above C joins U,
    a sample inside its margin joins F, one of U outside its margin becomes free) and solved again.
    """
    from scipy.linalg.blas import get_blas_funcs
    from scipy.linalg.lapack import get_lapack_funcs

    n = len(y)
    support, at_bound = support.copy(), at_bound & support
    potrf = get_lapack_funcs("potrf", (kernel,))
    trsv = get_blas_funcs("trsv", (kernel,))
    for _ in range(rounds):
        free = np.flatnonzero(support & ~at_bound)
        upper = np.flatnonzero(at_bound)
        m = len(free)
        if m == 0:
            return None
        rows = np.take(kernel, free, axis=0, out=scratch.array("support_rows", (m, n)))
        system = np.take(rows, free, axis=1, out=scratch.array("support_system", (m, m)))
        rhs = 1.0 - C * rows[:, upper].sum(1) if len(upper) else np.ones(m)
        factor, info = potrf(system.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:  # more free samples than the latents' dimension: Q_FF is singular
            return None
        y_free = y[free]
        u = trsv(factor, trsv(factor, rhs, trans=1), trans=0)
        v = trsv(factor, trsv(factor, y_free, trans=1), trans=0)
        b = (float(y_free @ u) + C * float(y[upper].sum())) / float(y_free @ v)
        alpha_free = u - b * v
        if not (math.isfinite(b) and np.isfinite(alpha_free).all()):  # a degenerate guess
            return None
        alpha = np.zeros(n)
        alpha[free] = alpha_free
        alpha[upper] = C
        margin = kernel @ alpha + y * b
        slack = 1e-9 * max(1.0, float(np.abs(margin).max()))
        below, above = alpha_free <= 0, alpha_free >= C
        inside = ~support & (margin < 1.0 - slack)
        outside = at_bound & (margin > 1.0 + slack)
        if not (below.any() or above.any() or inside.any() or outside.any()):
            return alpha, b
        support[free[below]] = False
        at_bound[free[above]] = True
        support[inside] = True
        at_bound[outside] = False
    return None


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
    is the solution for all samples. A training set with few samples for its dimension
    (InterFaceGAN's 560 of 512-d latents) takes :func:`_fit_small_svm` instead: half of it
    solved loosely, then the exact optimum on the support that points to, checked on all.
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
    x: np.ndarray,
    y: np.ndarray,
    C: float,
    tol: float,
    max_iter: int,
    working_set: bool,
    kkt_tol: float,
    scratch: _Scratch | None = None,
) -> SVMSolution:
    """:func:`fit_linear_svm` on checked inputs (``x`` float32 or float64), in ``scratch``'s arrays."""
    n, dim = x.shape
    scratch = scratch if scratch is not None else _Scratch()
    rows = scratch.array("rows", (n, dim + 1))  # y_i * [x_i, 1], float64
    np.multiply(x, y[:, None], out=rows[:, :dim])
    rows[:, dim] = y
    z = rows[:, :dim]
    if working_set and _sample_space_is_cheaper(n, dim + 1):
        solution = _fit_small_svm(x, y, rows, C, tol, max_iter, scratch)
        if solution is not None:
            return solution
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
        sub = (
            rows
            if len(members) == n
            else np.take(rows, members, axis=0, out=scratch.array("members", (len(members), dim + 1)))
        )
        if not ((sub[:, dim] > 0).any() and (sub[:, dim] < 0).any()):
            members, sub, tight = everyone, rows, True
        # The first, loose solve only has to find the neighbourhood of the margin.
        alpha, b, iterations, gap = _svm_ipm(sub, C, tol if tight else 1e-3, max_iter, scratch=scratch)
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


SMALL_WORKING_SET = 0.5
"""Share of a small training set (solved in the sample space) in :func:`_fit_small_svm`'s first solve."""


def _fit_small_svm(
    x: np.ndarray, y: np.ndarray, rows: np.ndarray, C: float, tol: float, max_iter: int, scratch: _Scratch
) -> SVMSolution | None:
    """The SVM of a training set small enough for the sample space, from half of it; None if that does not settle.

    The half with the smallest margins under a diagonal linear discriminant is solved loosely
    (to :data:`CROSSOVER_GAP`); its solution's margins on all samples then guess the support,
    and :func:`_solve_on_support` solves exactly on it and checks the KKT conditions on every
    sample. The interior-point iterations thus factorise matrices of half the size (an eighth
    of the work), and the answer is the exact optimum for all samples. On InterFaceGAN's 560
    samples of 512-d latents this takes about 60 % of the time of the interior-point method on
    all of them.
    """
    n, dim = x.shape
    members = np.sort(_lda_order(x, y)[: max(2, int(SMALL_WORKING_SET * n))])
    if not ((y[members] > 0).any() and (y[members] < 0).any()):
        return None
    z = rows[:, :dim]
    kernel = np.matmul(z, z.T, out=scratch.array("full_kernel", (n, n)))  # Q for all samples (BLAS syrk)
    sub_kernel = np.take(
        np.take(kernel, members, axis=0, out=scratch.array("member_rows", (len(members), n))),
        members,
        axis=1,
        out=scratch.array("member_kernel", (len(members), len(members))),
    )
    sub = np.take(rows, members, axis=0, out=scratch.array("members", (len(members), dim + 1)))
    alpha, b, iterations, _ = _svm_ipm(
        sub,
        C,
        CROSSOVER_GAP,
        max_iter,
        sample_space=True,
        scratch=scratch,
        kernel=sub_kernel,
        crossover=False,
    )
    margin = z @ (sub[:, :dim].T @ alpha) + y * b
    # Guessed at C: the misclassified samples (the corrections of _solve_on_support move the rest).
    guess = _solve_on_support(kernel, y, margin < 1.0 + MARGIN_GUESS, margin < 0.0, C, scratch, rounds=8)
    if guess is None:
        return None
    alpha, b = guess
    gap, feasible = _duality_gap(z, y, alpha, b, C)[:2]
    if not (feasible and gap <= tol):
        return None
    return SVMSolution(
        weight=z.T @ alpha,
        bias=float(b),
        n_support=_n_support(alpha),
        iterations=int(iterations),
        rounds=1,
        gap=float(gap),
    )


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
        local = threading.local()

        def solve(split: TopBottomSplit) -> SVMSolution:
            scratch = getattr(local, "scratch", None)
            if scratch is None:
                scratch = local.scratch = _Scratch()
            index = _numpy(split.train_index)
            x = np.take(
                x_all, index, axis=0, out=scratch.array("x", (len(index), x_all.shape[1]), x_all.dtype)
            )
            if not np.isfinite(x).all():
                check_finite_values(latents, scores)  # raises, naming the rows
            return _fit_linear_svm(
                x,
                _numpy(split.train_label).astype(np.float64),
                float(self.C),
                float(self.tol),
                100,
                True,
                1e-3,
                scratch=scratch,
            )

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
