"""Axis finders: estimators that fit one latent direction per attribute.

Every finder follows the same contract (scikit-learn style):

* the constructor arguments are the whole configuration, stored as given;
* ``fit(latents, scores, attributes=None) -> self`` with ``latents`` (N, D) and ``scores``
  (N, A) classifier **logits** (probability = sigmoid(logit)), one column per attribute;
* fitted state lives in attributes ending in ``_``, set only by fitting:
  ``coef_`` (A, D) and ``bias_`` (A,) of the linear decision function
  ``latents @ coef_.T + bias_``; ``axes_`` (A, D) = ``coef_`` rows scaled to unit length;
  ``intercepts_`` (A,) = ``bias_ / |coef_|``, so ``latents @ axes_.T + intercepts_`` is the
  signed distance (in latent units) to each attribute's decision boundary; ``metrics_``
  (attribute -> {metric: float}); ``attributes_`` (names);
* ``to_feature_axes(...)`` packages the result as a :class:`~tlgan.axes.FeatureAxes`.

Three finders are registered in :data:`FINDERS`:

``glm``       TL-GAN: ordinary least squares of the (clipped) logit on [z, 1], all attributes
              at once through streamed float64 normal equations.
``logistic``  logistic regression of the label (logit > 0) on z, all attributes at once (L-BFGS).
``svm``       InterFaceGAN: a linear hinge-loss SVM with an unregularised intercept (the problem
              scikit-learn's ``SVC(kernel="linear")`` solves) on the top and bottom ``ratio`` of
              samples by score, solved here by a primal-dual interior-point method.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.registry import Registry

log = logging.getLogger(__name__)

FINDERS: Registry = Registry("axis finder")

# logit(1 - 1e-4): probabilities are kept inside [1e-4, 1 - 1e-4] by default.
DEFAULT_CLIP = 9.21


class NotFittedError(TlganError, AttributeError):
    """A fitted attribute (``axes_``, ...) was used before ``fit``.

    Also an AttributeError, so ``hasattr(finder, "axes_")`` is simply False on a fresh finder.
    """


# --------------------------------------------------------------------------- input checks
def _as_matrix(value: Any, name: str) -> torch.Tensor:
    """A floating-point tensor view of ``value`` (tensor or array); other dtypes become float32."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise TlganError(f"{name} must be a numeric tensor or array ({exc})") from None
    if not value.is_floating_point():
        value = value.float()
    return value


def _count_bad_rows(values: torch.Tensor, name: str) -> None:
    # A sum is finite iff every term is (barring overflow, which falls through to the exact
    # test): one reduction instead of a boolean array the size of the data.
    if bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all()):
        return
    bad = ~torch.isfinite(values).reshape(len(values), -1).all(dim=1)
    rows = torch.nonzero(bad).flatten()
    raise TlganError(
        f"{name} has {len(rows)} row(s) with NaN or infinite values (first at row {int(rows[0])}); "
        f"drop those samples (or re-run the classifier on them) before fitting"
    )


def check_fit_inputs(latents: Any, scores: Any, attributes: Optional[Sequence[str]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Validate the arguments of ``fit``; returns (latents (N, D), scores (N, A), names (A,)).

    Raises TlganError for wrong dimensions, a sample-count mismatch, NaN/inf rows (naming the
    array and how many rows), a name list of the wrong length or with duplicates, and attributes
    whose scores are constant (nothing to fit).
    """
    latents = _as_matrix(latents, "latents")
    scores = _as_matrix(scores, "scores")
    if latents.ndim != 2:
        raise TlganError(f"latents must be a 2-D (N, D) array of N latent vectors; got shape {tuple(latents.shape)}")
    if scores.ndim != 2:
        hint = " (for a single attribute pass scores[:, None])" if scores.ndim == 1 else ""
        raise TlganError(f"scores must be a 2-D (N, A) array of logits, one column per attribute; "
                         f"got shape {tuple(scores.shape)}{hint}")
    if len(latents) != len(scores):
        raise TlganError(f"latents have {len(latents)} rows but scores have {len(scores)}; "
                         f"they must describe the same samples, row for row")
    if len(latents) == 0 or latents.shape[1] == 0 or scores.shape[1] == 0:
        raise TlganError(f"nothing to fit: latents {tuple(latents.shape)}, scores {tuple(scores.shape)}")
    _count_bad_rows(latents, "latents")
    _count_bad_rows(scores, "scores")
    n_attr = scores.shape[1]
    if attributes is None:
        names = [f"attribute_{i}" for i in range(n_attr)]
    else:
        names = [str(a) for a in attributes]
        if len(names) != n_attr:
            raise TlganError(f"got {len(names)} attribute names for {n_attr} score columns; "
                             f"give exactly one name per column of scores")
        dupes = sorted({a for a in names if names.count(a) > 1})
        if dupes:
            raise TlganError(f"attribute names must be unique; repeated: {', '.join(dupes)}")
    span = scores.amax(dim=0) - scores.amin(dim=0)
    constant = [names[i] for i in torch.nonzero(span == 0).flatten().tolist()]
    if constant:
        raise TlganError(f"cannot fit an axis for {', '.join(repr(c) for c in constant)}: its score is the same for "
                         f"every sample; drop that attribute or check the classifier output")
    return latents, scores, names


# --------------------------------------------------------------------------- parallel linear algebra
# GLM and SVM run in NumPy on the CPU. Their work is split into independent pieces (chunks of
# samples, attributes) that Python threads take in turn, each calling single-threaded BLAS:
# NumPy releases the GIL inside BLAS, so the threads run in parallel, and when another job on
# the machine holds a core only the piece on that core waits. (Multi-threaded BLAS splits each
# call statically between its threads and, on a shared machine, runs several times slower than
# one thread.) Results are combined in a fixed order, so they do not depend on timing.
def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy()


def _thread_count() -> int:
    """Worker threads for a fit: torch's thread count (``torch.set_num_threads`` governs tlgan)."""
    if importlib.util.find_spec("threadpoolctl") is None:  # needed to keep BLAS single-threaded in workers
        return 1
    return max(1, torch.get_num_threads())


@contextmanager
def _blas_threads(limit: int) -> Iterator[None]:
    """Run the block with NumPy/SciPy's BLAS limited to ``limit`` threads.

    Needs the small ``threadpoolctl`` package; without it BLAS keeps its own setting (and
    :func:`_thread_count` answers 1, so nothing is oversubscribed).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=int(limit), user_api="blas"):
        yield


def _ordered_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> Iterator[Any]:
    """``fn`` over ``items`` on ``workers`` threads; yields results in the order of ``items``.

    At most ``2 * workers`` pieces are in flight, so memory stays bounded.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _gram(rows: np.ndarray) -> np.ndarray:
    """rows^T rows (m, m) for float64 ``rows`` (n, m): NumPy calls BLAS syrk for this product."""
    return rows.T @ rows


def _solve_spd(matrix: np.ndarray, rhs: np.ndarray, what: str) -> np.ndarray:
    """Solve ``matrix @ x = rhs`` for a symmetric positive (semi-)definite float64 ``matrix``.

    Cholesky when it succeeds; otherwise (collinear latent dimensions) the minimum-norm
    solution through the eigendecomposition, with a warning.
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, eigh

    try:
        return cho_solve(cho_factor(matrix, check_finite=False), rhs, check_finite=False)
    except LinAlgError:
        pass
    evals, evecs = eigh(matrix, check_finite=False)
    keep = evals > evals.max() * 1e-12
    log.warning("%s: the latent covariance is singular (%d of %d directions carry no variance); "
                "using the minimum-norm solution", what, int((~keep).sum()), len(evals))
    inv = np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0)
    return evecs @ (inv.reshape(-1, *([1] * (rhs.ndim - 1))) * (evecs.T @ rhs))


# --------------------------------------------------------------------------- base class
class AxisFinder:
    """Base class of the finders; see the module docstring for the contract."""

    name = "base"
    _fitted_attributes = ("coef_", "bias_", "axes_", "intercepts_", "metrics_", "attributes_", "n_samples_")

    def __getattr__(self, item: str):
        # Only called when normal lookup fails: a fitted attribute that is not there yet.
        if item in type(self)._fitted_attributes:
            raise NotFittedError(self._not_fitted_message(item))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def _not_fitted_message(self, item: str) -> str:
        return (f"this {type(self).__name__} is not fitted yet, so it has no {item}; "
                f"call fit(latents, scores, attributes) first")

    def get_params(self) -> Dict[str, Any]:
        """The constructor arguments (the whole configuration), as given."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, latents, scores, attributes: Optional[Sequence[str]] = None) -> "AxisFinder":
        raise NotImplementedError

    def _set_fitted(self, coef: torch.Tensor, bias: torch.Tensor, names: List[str],
                    metrics: Dict[str, Dict[str, float]], n_samples: int) -> None:
        coef = coef.detach().to("cpu", torch.float64)
        bias = bias.detach().to("cpu", torch.float64).reshape(-1)
        norms = coef.norm(dim=1)
        flat = [names[i] for i in torch.nonzero(~(norms > 0)).flatten().tolist()]
        if flat:
            raise TlganError(f"the fitted direction of {', '.join(map(repr, flat))} is zero: the scores do not vary "
                             f"with the latents; check the classifier or drop the attribute")
        self.coef_ = coef.float()
        self.bias_ = bias.float()
        self.axes_ = (coef / norms[:, None]).float()
        self.intercepts_ = (bias / norms).float()
        self.metrics_ = metrics
        self.attributes_ = list(names)
        self.n_samples_ = int(n_samples)

    def decision_function(self, latents) -> torch.Tensor:
        """(N, D) -> (N, A) linear scores ``latents @ coef_.T + bias_`` (logit units for glm)."""
        latents = _as_matrix(latents, "latents")
        coef = self.coef_
        if latents.ndim != 2 or latents.shape[1] != coef.shape[1]:
            raise TlganError(f"latents of shape {tuple(latents.shape)} do not match this finder, "
                             f"which was fitted on vectors of size {coef.shape[1]}")
        return latents.float() @ coef.T.to(latents.device) + self.bias_.to(latents.device)

    def to_feature_axes(self, attributes: Optional[Sequence[str]] = None, space: str = "z",
                        generator: str = "unknown") -> FeatureAxes:
        """The fitted axes as a FeatureAxes (method = this finder's name, info = its parameters).

        ``attributes`` names the A rows (default: the names given to ``fit``); it must have one
        name per fitted attribute.
        """
        axes = self.axes_
        names = self.attributes_ if attributes is None else [str(a) for a in attributes]
        if len(names) != len(axes):
            raise TlganError(f"got {len(names)} attribute names for {len(axes)} fitted axes; give one name per axis "
                             f"(fitted: {', '.join(self.attributes_)})")
        metrics = {new: dict(self.metrics_.get(old, {})) for new, old in zip(names, self.attributes_)}
        info = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in self.get_params().items()}
        return FeatureAxes(axes.clone(), names, space=space, generator=generator, method=self.name,
                           metrics=metrics, info=info)


def make_finder(name: str, **kwargs) -> AxisFinder:
    """Build the registered finder ``name`` with constructor arguments ``kwargs``."""
    FINDERS.check(name)
    cls = {c.name: c for c in AxisFinder.__subclasses__()}.get(name)
    if cls is not None:
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TlganError(f"axis finder {name!r} has no option {', '.join(map(repr, unknown))}; "
                             f"its options are: {', '.join(params)}")
    return FINDERS.create(name, **kwargs)


# --------------------------------------------------------------------------- GLM (TL-GAN)
@FINDERS.register("glm", "least squares of the clipped logit on z (TL-GAN); streamed normal equations")
class GLMFinder(AxisFinder):
    """Ordinary least squares of each attribute's logit on [z, 1] (TL-GAN's feature axes).

    All attributes are fitted at once from one accumulated Gram matrix of [z, 1, logits] in
    float64 (BLAS syrk, chunk by chunk, chunks spread over ``torch.get_num_threads()`` threads and
    summed in order), so memory is O((D + A)^2) whatever N is. Logits are
    clipped to +-``clip`` first (default 9.21: probabilities in [1e-4, 1 - 1e-4]) so saturated
    classifier outputs do not dominate the fit; ``clip=None`` turns clipping off. The axis is
    the coefficient vector made unit length. Runs on the CPU (NumPy/SciPy).

    Args:
        clip: clip logits to [-clip, clip] (logit units) before fitting, or None.
        chunk_size: rows per accumulation step (extra memory: chunk_size * (D + A + 1) * 8 bytes).

    Metrics per attribute: ``r2`` (coefficient of determination of the clipped-logit fit,
    in-sample), ``sign_accuracy`` (fraction of samples where sign(prediction) == sign(logit);
    set by ``fit``, and by :meth:`evaluate` for streamed fits), ``n_samples``.

    Streaming: ``reset()``, ``partial_fit(latents_chunk, scores_chunk)`` any number of times,
    then ``finalize()``; the result equals ``fit`` on all the chunks at once.
    """

    name = "glm"
    _fitted_attributes = AxisFinder._fitted_attributes + ("r2_",)

    def __init__(self, clip: Optional[float] = DEFAULT_CLIP, chunk_size: int = 16384):
        self.clip = clip
        self.chunk_size = chunk_size

    def _not_fitted_message(self, item: str) -> str:
        if self.__dict__.get("_state") is not None:
            return f"GLMFinder has accumulated {self._state['n']} samples but has no {item} yet: call finalize()"
        return super()._not_fitted_message(item)

    def _check_clip(self) -> None:
        if self.clip is not None and not float(self.clip) > 0:
            raise TlganError(f"clip must be a positive number of logit units or None (got {self.clip!r})")

    def _clipped(self, y: np.ndarray) -> np.ndarray:
        return y if self.clip is None else np.clip(y, -float(self.clip), float(self.clip))

    # -- streaming
    def reset(self) -> "GLMFinder":
        """Forget accumulated statistics and fitted state."""
        self._state = None
        for item in self._fitted_attributes:
            self.__dict__.pop(item, None)
        return self

    def partial_fit(self, latents, scores, attributes: Optional[Sequence[str]] = None) -> "GLMFinder":
        """Accumulate one chunk: ``latents`` (n, D), ``scores`` (n, A) logits. Call finalize() at the end."""
        self._check_clip()
        latents = _as_matrix(latents, "latents")
        scores = _as_matrix(scores, "scores")
        if latents.ndim != 2 or scores.ndim != 2 or len(latents) != len(scores):
            raise TlganError(f"partial_fit needs latents (n, D) and scores (n, A) with the same n; "
                             f"got {tuple(latents.shape)} and {tuple(scores.shape)}")
        _count_bad_rows(latents, "latents")
        _count_bad_rows(scores, "scores")
        state = self.__dict__.get("_state")
        if state is not None:
            if latents.shape[1] != state["dim"] or scores.shape[1] != len(state["names"]):
                raise TlganError(f"chunk has {latents.shape[1]} latent dims and {scores.shape[1]} attributes, earlier "
                                 f"chunks had {state['dim']} and {len(state['names'])}; call reset() to start over")
            if attributes is not None and [str(a) for a in attributes] != state["names"]:
                raise TlganError("attribute names differ from the earlier chunks; call reset() to start over")
        else:
            names = ([f"attribute_{i}" for i in range(scores.shape[1])] if attributes is None
                     else [str(a) for a in attributes])
            if len(names) != scores.shape[1]:
                raise TlganError(f"got {len(names)} attribute names for {scores.shape[1]} score columns")
        for item in self._fitted_attributes:  # fitted state is stale once new data arrives
            self.__dict__.pop(item, None)
        if len(latents) == 0:
            return self
        x, y = _numpy(latents), _numpy(scores)
        if state is None:
            self._start(x, y, names)
        self._accumulate(x, y)
        return self

    def _start(self, x: np.ndarray, y: np.ndarray, names: List[str]) -> None:
        dim, n_attr = x.shape[1], y.shape[1]
        head = slice(0, max(1, int(self.chunk_size)))
        # Shift by the first chunk's means: the centred statistics are then differences of
        # small numbers, which keeps float64 accurate even for latents far from the origin.
        self._state = {
            "dim": dim, "names": list(names), "n": 0,
            "shift_x": x[head].mean(0, dtype=np.float64),
            "shift_y": self._clipped(y[head].astype(np.float64)).mean(0),
            "gram": np.zeros((dim + 1 + n_attr, dim + 1 + n_attr), dtype=np.float64),
            "lo": np.full(n_attr, np.inf), "hi": np.full(n_attr, -np.inf),
        }

    def _accumulate(self, x: np.ndarray, y: np.ndarray, progress: bool = False) -> None:
        """Add the Gram matrix of [x - shift_x, 1, clip(y) - shift_y] over all rows to the state."""
        state = self._state
        dim, width = state["dim"], state["gram"].shape[0]
        step = max(1, int(self.chunk_size))
        local = threading.local()  # one reusable row buffer per worker thread

        def chunk_gram(start: int):
            xc, yc = x[start:start + step], self._clipped(y[start:start + step].astype(np.float64))
            m = len(xc)
            buffer = getattr(local, "buffer", None)
            if buffer is None or len(buffer) < m:
                buffer = local.buffer = np.empty((max(m, min(step, len(x))), width), dtype=np.float64)
            rows = buffer[:m]
            np.subtract(xc, state["shift_x"], out=rows[:, :dim])
            rows[:, dim] = 1.0
            np.subtract(yc, state["shift_y"], out=rows[:, dim + 1:])
            return _gram(rows), yc.min(0), yc.max(0), m

        starts = range(0, len(x), step)
        with _blas_threads(1):
            results = _ordered_map(chunk_gram, starts, _thread_count())
            for gram, lo, hi, m in tqdm(results, total=len(starts), desc="glm", unit="chunk", leave=False,
                                        disable=None if progress else True):
                state["gram"] += gram
                np.minimum(state["lo"], lo, out=state["lo"])
                np.maximum(state["hi"], hi, out=state["hi"])
                state["n"] += m

    def finalize(self) -> "GLMFinder":
        """Solve the accumulated normal equations; sets coef_, bias_, axes_, intercepts_, metrics_, r2_."""
        state = self.__dict__.get("_state")
        if state is None or state["n"] == 0:
            raise NotFittedError("GLMFinder has no data: call partial_fit(latents, scores) before finalize()")
        dim, names, n = state["dim"], state["names"], state["n"]
        if n <= dim + 1:
            raise TlganError(f"the GLM needs more samples than latent dimensions + 1 (got N={n} for D={dim}); "
                             f"sample more latents")
        constant = [names[i] for i in np.flatnonzero(state["hi"] <= state["lo"])]
        if constant:
            raise TlganError(f"cannot fit an axis for {', '.join(map(repr, constant))}: its clipped logit is the same "
                             f"for every sample (clip={self.clip}); drop that attribute or check the classifier output")
        gram = state["gram"]
        sxx, sx, count = gram[:dim, :dim], gram[:dim, dim], gram[dim, dim]
        sxy, sy = gram[:dim, dim + 1:], gram[dim, dim + 1:]
        syy = np.diagonal(gram[dim + 1:, dim + 1:])
        mx, my = sx / count, sy / count
        cxx = sxx - count * np.outer(mx, mx)
        cxy = sxy - count * np.outer(mx, my)
        cyy = np.maximum(syy - count * my * my, 0.0)
        beta = _solve_spd(cxx, cxy, "GLM")  # (D, A)
        bias = my - mx @ beta + state["shift_y"] - state["shift_x"] @ beta
        sse = np.maximum(cyy - (beta * cxy).sum(0), 0.0)
        r2 = 1.0 - sse / cyy
        metrics = {a: {"r2": float(r2[i]), "n_samples": float(n)} for i, a in enumerate(names)}
        self._set_fitted(torch.from_numpy(beta.T.copy()), torch.from_numpy(bias), names, metrics, n)
        self.r2_ = torch.from_numpy(r2).float()
        return self

    # -- one-shot
    def fit(self, latents, scores, attributes: Optional[Sequence[str]] = None) -> "GLMFinder":
        """Fit on all samples (accumulated in chunks of ``chunk_size``), then measure sign accuracy."""
        self._check_clip()
        latents, scores, names = check_fit_inputs(latents, scores, attributes)
        x, y = _numpy(latents), _numpy(scores)
        self.reset()
        self._start(x, y, names)
        self._accumulate(x, y, progress=True)
        self.finalize()
        accuracy = self._sign_accuracy(x, y)
        for i, a in enumerate(names):
            self.metrics_[a]["sign_accuracy"] = float(accuracy[i])
        return self

    def _sign_accuracy(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._score_chunks(x, y)[0]

    def _score_chunks(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(sign accuracy (A,), R^2 of the clipped logits (A,)), one chunk of rows at a time."""
        coef = _numpy(self.coef_).T.astype(np.float64)
        bias = _numpy(self.bias_).astype(np.float64)
        step = max(1, int(self.chunk_size))

        def chunk_scores(start: int):
            pred = x[start:start + step].astype(np.float64) @ coef + bias
            raw = y[start:start + step]
            target = self._clipped(raw.astype(np.float64))
            return (((pred > 0) == (raw > 0)).sum(0), ((target - pred) ** 2).sum(0), target.sum(0),
                    (target ** 2).sum(0))

        with _blas_threads(1):
            parts = list(_ordered_map(chunk_scores, range(0, len(x), step), _thread_count()))
        agree, sse, total, squares = (np.sum([p[k] for p in parts], axis=0) for k in range(4))
        n = len(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = 1.0 - sse / (squares - total ** 2 / n)
        return agree / n, r2

    def evaluate(self, latents, scores) -> Dict[str, Dict[str, float]]:
        """Per attribute {r2, sign_accuracy} of the fitted model on ``latents`` (N, D), ``scores`` (N, A) logits.

        Streams over ``chunk_size`` rows, so it can score data of any size (e.g. after partial_fit).
        """
        coef = self.coef_
        latents, scores = _as_matrix(latents, "latents"), _as_matrix(scores, "scores")
        if (latents.ndim != 2 or scores.ndim != 2 or len(latents) != len(scores) or len(latents) == 0
                or latents.shape[1] != coef.shape[1] or scores.shape[1] != coef.shape[0]):
            raise TlganError(f"evaluate needs latents (N, {coef.shape[1]}) and scores (N, {coef.shape[0]}) with the "
                             f"same N > 0; got {tuple(latents.shape)} and {tuple(scores.shape)}")
        _count_bad_rows(latents, "latents")
        _count_bad_rows(scores, "scores")
        accuracy, r2 = self._score_chunks(_numpy(latents), _numpy(scores))
        return {a: {"r2": float(r2[i]), "sign_accuracy": float(accuracy[i])} for i, a in enumerate(self.attributes_)}


# --------------------------------------------------------------------------- logistic
@FINDERS.register("logistic", "logistic regression of the label (logit > 0) on z; L-BFGS, light L2")
class LogisticFinder(AxisFinder):
    """L2-regularised logistic regression of the binary label (logit > 0) on [z, 1].

    All attributes are fitted together: one L-BFGS run (strong-Wolfe line search) over a
    (D, A) weight matrix, in standardised latent coordinates (so the L2 penalty treats every
    latent dimension alike and the problem is well conditioned); the result is mapped back to
    the original coordinates. A seeded random ``val_fraction`` of the samples is held out.

    Args:
        l2: penalty ``l2 / 2 * |w|^2`` added to the mean log-loss (standardised units; bias free).
        val_fraction: fraction of samples held out for ``val_accuracy`` (0 for none).
        max_iter: L-BFGS iterations at most.
        tol: stop when the largest gradient entry is below this (the loss is float32: much
            smaller values only add iterations).
        seed: seed of the train/validation split.
        device: where the optimisation runs.

    Metrics per attribute: ``train_accuracy``, ``val_accuracy`` (when val_fraction > 0), ``n_train``.
    """

    name = "logistic"

    def __init__(self, l2: float = 1e-3, val_fraction: float = 0.2, max_iter: int = 200, tol: float = 1e-5,
                 seed: int = 0, device: str = "cpu"):
        self.l2 = l2
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.device = device

    def fit(self, latents, scores, attributes: Optional[Sequence[str]] = None) -> "LogisticFinder":
        latents, scores, names = check_fit_inputs(latents, scores, attributes)
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise TlganError(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if not float(self.l2) >= 0:
            raise TlganError(f"l2 must be >= 0 (got {self.l2})")
        n, dim = latents.shape
        labels = scores > 0
        positives = labels.sum(0)
        one_class = [(names[i], int(positives[i])) for i in range(len(names)) if positives[i] in (0, n)]
        if one_class:
            desc = ", ".join(f"{a!r} ({'all' if p == n else 'no'} samples positive)" for a, p in one_class)
            raise TlganError(f"logistic regression needs both classes (logit > 0 and <= 0) for every attribute: {desc}; "
                             f"sample more latents, or use the glm finder")
        device = torch.device(self.device)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        n_val = int(round(n * float(self.val_fraction)))
        val_idx, train_idx = order[:n_val], order[n_val:]
        if len(train_idx) < 2:
            raise TlganError(f"too few samples to fit: {n} samples leave {len(train_idx)} for training "
                             f"with val_fraction={self.val_fraction}")
        x = latents[train_idx].to(device, torch.float32)
        y = labels[train_idx].to(device, torch.float32)
        single = [names[i] for i in range(len(names)) if y[:, i].min() == y[:, i].max()]
        if single:
            raise TlganError(f"the training split holds only one class for {', '.join(map(repr, single))}; "
                             f"sample more latents or lower val_fraction")
        mean = x.mean(0)
        std = x.std(0).clamp_min(1e-12)
        weight, bias = self._optimise(x, y, mean, std)
        coef = (weight / std[:, None]).T.to(torch.float64)  # (A, D) in original coordinates
        intercept = (bias - (mean / std) @ weight).to(torch.float64)

        coef32, intercept32 = coef.to(device, torch.float32), intercept.to(device, torch.float32)

        def accuracy(xs: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
            correct = torch.zeros(len(names), dtype=torch.float64, device=device)
            for start in range(0, len(xs), 65536):  # chunks bound the memory of the (rows, A) products
                pred = xs[start:start + 65536].to(device, torch.float32) @ coef32.T + intercept32
                correct += ((pred > 0) == truth[start:start + 65536].to(device)).sum(0)
            return (correct / len(xs)).cpu()

        train_acc = accuracy(x, y > 0.5)
        val_acc = accuracy(latents[val_idx], labels[val_idx]) if n_val else None
        metrics = {}
        for i, a in enumerate(names):
            metrics[a] = {"train_accuracy": float(train_acc[i]), "n_train": float(len(train_idx))}
            if val_acc is not None:
                metrics[a]["val_accuracy"] = float(val_acc[i])
        self._set_fitted(coef, intercept, names, metrics, n)
        return self

    def _optimise(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Minimise mean log-loss + l2/2 |W|^2 over W (D, A) in standardised units and bias (A,)."""
        dim, n_attr = x.shape[1], y.shape[1]
        prior = y.mean(0).clamp(1e-6, 1 - 1e-6)
        weight = torch.zeros(dim, n_attr, dtype=torch.float32, device=x.device, requires_grad=True)
        bias = torch.logit(prior).detach().clone().requires_grad_(True)
        scale = (1.0 / std)[:, None]
        shift = mean / std
        l2 = float(self.l2)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=int(self.max_iter), tolerance_grad=float(self.tol),
                                      tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            # Standardisation is folded into the weights instead of making a standardised copy of x.
            logits = x @ (weight * scale) + (bias - shift @ weight)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(x)
            loss = loss + 0.5 * l2 * (weight * weight).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        iterations = optimizer.state[weight].get("n_iter", 0)
        if iterations >= int(self.max_iter):
            log.warning("logistic: L-BFGS stopped after max_iter=%d iterations before reaching tol=%g; "
                        "the axes may be slightly off (raise max_iter or l2)", self.max_iter, self.tol)
        return weight.detach(), bias.detach()


# --------------------------------------------------------------------------- SVM (InterFaceGAN)
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


def top_bottom_split(scores: torch.Tensor, ratio: float = 0.02, val_fraction: float = 0.3, seed: int = 0,
                     column: int = 0, name: str = "attribute") -> TopBottomSplit:
    """Split one attribute's samples as InterFaceGAN does.

    Takes the ``k = int(N * ratio)`` highest and ``k`` lowest ``scores`` (N,) (ties broken by
    sample order), shuffles each set with a generator seeded by (seed, column), and holds out
    ``round(k * val_fraction)`` of each for validation.
    """
    scores = torch.as_tensor(scores).reshape(-1)
    n = len(scores)
    ratio, val_fraction = float(ratio), float(val_fraction)
    if not 0.0 < ratio <= 0.5:
        raise TlganError(f"ratio must be in (0, 0.5] (the top and the bottom fraction of samples); got {ratio}")
    if not 0.0 <= val_fraction < 1.0:
        raise TlganError(f"val_fraction must be in [0, 1); got {val_fraction}")
    k = int(n * ratio)
    n_val = int(round(k * val_fraction))
    n_train = k - n_val
    if k < 2 or n_train < 1:
        need = math.ceil(max(2, 1 + n_val) / ratio)
        raise TlganError(f"too few samples for {name!r}: N={n} with ratio={ratio} gives {k} top and {k} bottom "
                         f"samples ({n_train} per class to train on); use at least N={need} samples or a larger ratio")
    order = torch.argsort(scores, descending=True, stable=True)
    top, bottom = order[:k], order[n - k:]
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
        rest_index=order[k:n - k],
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


def _svm_ipm(rows: np.ndarray, C: float, tol: float, max_iter: int) -> Tuple[np.ndarray, float, int, float]:
    """Mehrotra predictor-corrector interior-point method for the linear SVM dual.

    ``rows`` (n, D+1) float64 holds y_i * [x_i, 1]. Solves

        min_a  1/2 |Z^T a|^2 - sum(a)   s.t.  y^T a = 0,  0 <= a <= C     (Z = rows[:, :D])

    whose equality multiplier is the intercept b. Each Newton system is reduced to the
    (D+1) x (D+1) positive definite system (P + rows^T E rows) [dw; db] = ..., with
    P = diag(1, ..., 1, 0) and E = diag(1 / (s/a + r/(C-a))), so an iteration costs one weighted
    Gram matrix, O(n D^2), however many samples end up support vectors. Stops when the duality
    gap relative to the primal objective is <= ``tol``.
    Returns (alpha (n,), b, iterations, relative gap of the returned point).
    """
    from scipy.linalg import cho_solve

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
    mu0 = float((alpha @ (np.maximum(-grad, 0.0) + 1.0) + (C - alpha) @ (np.maximum(grad, 0.0) + 1.0)) / (2 * n))
    s = mu0 / alpha
    r = mu0 / (C - alpha)
    b = 0.0
    scaled = np.empty_like(rows)
    diag = np.arange(dim)
    best: Tuple[float, np.ndarray, float] = (math.inf, alpha, b)
    gap = math.inf
    it = 0
    for it in range(max_iter + 1):
        t = C - alpha
        w = z.T @ alpha
        margin = z @ w  # y_i x_i . w, i.e. (Q alpha)_i
        rd = margin - 1.0 + y * b - s + r
        rp = float(y @ alpha)
        ww = float(w @ w)
        primal = 0.5 * ww + C * float(np.maximum(1.0 - margin - y * b, 0.0).sum())
        dual = float(alpha.sum()) - 0.5 * ww
        gap = (primal - dual) / max(1.0, abs(primal))
        feasible = abs(rp) <= 1e-8 * max(1.0, float(alpha.sum()))
        if feasible and gap < best[0]:
            best = (gap, alpha, b)
        if (feasible and gap <= tol) or it == max_iter:
            break
        mu = float((alpha @ s + t @ r) / (2 * n))
        e = 1.0 / (s / alpha + r / t)
        np.multiply(rows, np.sqrt(e)[:, None], out=scaled)
        system = _gram(scaled)
        system[diag, diag] += 1.0
        try:
            factor = (np.linalg.cholesky(system), True)
        except np.linalg.LinAlgError:
            log.debug("svm: Newton system lost definiteness at iteration %d (gap %.2e); keeping the best point", it, gap)
            break

        def newton(rc1: np.ndarray, rc2: np.ndarray):
            g = -rd + rc1 / alpha - rc2 / t
            rhs = rows.T @ (e * g)
            rhs[dim] += rp
            v = cho_solve(factor, rhs, check_finite=False)
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


def fit_linear_svm(x, y, C: float = 1.0, tol: float = 1e-7, max_iter: int = 100, working_set: bool = True,
                   kkt_tol: float = 1e-3) -> SVMSolution:
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


def _check_svm_inputs(x, y, C: float) -> Tuple[np.ndarray, np.ndarray]:
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


def _fit_linear_svm(x: np.ndarray, y: np.ndarray, C: float, tol: float, max_iter: int, working_set: bool,
                    kkt_tol: float) -> SVMSolution:
    n, dim = x.shape
    rows = np.concatenate([y[:, None] * x, y[:, None]], axis=1)
    z = rows[:, :dim]
    everyone = np.arange(n)
    first = max(1000, n // 5)
    if not working_set or n <= first + dim:
        members = everyone
    else:
        # Margins under a diagonal linear discriminant (class-mean difference over per-dimension
        # variance, O(n D)) rank the samples well enough to guess the support vectors.
        pos, neg = x[y > 0], x[y < 0]
        variance = 0.5 * (pos.var(0) + neg.var(0)) + 1e-12 * (1.0 + x.var(0).max())
        direction = (pos.mean(0) - neg.mean(0)) / variance
        offset = -0.5 * float((pos.mean(0) + neg.mean(0)) @ direction)
        members = np.argsort(y * (x @ direction + offset), kind="stable")[:first]
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
        log.warning("svm: stopped at relative duality gap %.1e (asked for %.0e); the axis may be slightly off", gap, tol)
    n_support = int((alpha > 1e-6 * float(alpha.max())).sum())
    return SVMSolution(weight=w, bias=float(b), n_support=n_support, iterations=int(iterations), rounds=rounds,
                       gap=float(gap))


@FINDERS.register("svm", "linear SVM on the top/bottom samples by score (InterFaceGAN)")
class SVMFinder(AxisFinder):
    """InterFaceGAN's boundaries: per attribute, a linear SVM on the extreme samples.

    For each attribute: the top and bottom ``ratio`` of samples by score become the positive
    and negative class (see :func:`top_bottom_split`), ``val_fraction`` of each is held out,
    and a linear SVM (hinge loss, ``C``, unregularised intercept: the problem of scikit-learn's
    ``SVC(kernel="linear", C=C)``) is fitted on the rest by :func:`fit_linear_svm`. The axis is
    the unit normal of the separating hyperplane, pointing to high scores. Runs on the CPU,
    attributes side by side on ``torch.get_num_threads()`` threads.

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

    def __init__(self, ratio: float = 0.02, val_fraction: float = 0.3, C: float = 1.0, seed: int = 0,
                 tol: float = 1e-6):
        self.ratio = ratio
        self.val_fraction = val_fraction
        self.C = C
        self.seed = seed
        self.tol = tol

    def fit(self, latents, scores, attributes: Optional[Sequence[str]] = None) -> "SVMFinder":
        latents, scores, names = check_fit_inputs(latents, scores, attributes)
        if not float(self.C) > 0:
            raise TlganError(f"C must be > 0 (got {self.C})")
        splits = [top_bottom_split(scores[:, i], self.ratio, self.val_fraction, self.seed, column=i, name=a)
                  for i, a in enumerate(names)]
        x_all, s_all = _numpy(latents), _numpy(scores)

        def solve(split: TopBottomSplit) -> SVMSolution:
            x, y = _check_svm_inputs(x_all[_numpy(split.train_index)], _numpy(split.train_label), self.C)
            return _fit_linear_svm(x, y, float(self.C), float(self.tol), 100, True, 1e-3)

        with _blas_threads(1):
            solutions = list(tqdm(_ordered_map(solve, splits, _thread_count()), total=len(splits), desc="svm",
                                  unit="attr", leave=False, disable=None))
        coef = np.stack([solution.weight for solution in solutions])
        bias = np.array([solution.bias for solution in solutions])
        # Decision values of every sample for every attribute in one product (float32 is ample for a sign).
        decision = x_all @ coef.T.astype(x_all.dtype) + bias.astype(x_all.dtype)
        metrics: Dict[str, Dict[str, float]] = {}
        for i, (a, split, solution) in enumerate(zip(names, splits, solutions)):
            metrics[a] = {"n_train": float(len(split.train_index)), "n_support": float(solution.n_support)}
            if len(split.val_index):
                pred = decision[_numpy(split.val_index), i]
                metrics[a]["val_accuracy"] = float(((pred > 0) == (_numpy(split.val_label) > 0)).mean())
            if len(split.rest_index):
                rest = _numpy(split.rest_index)
                metrics[a]["remaining_accuracy"] = float(((decision[rest, i] > 0) == (s_all[rest, i] > 0)).mean())
            log.debug("svm %s: %d support vectors, %d rounds, gap %.1e", a, solution.n_support, solution.rounds,
                      solution.gap)
        self._set_fitted(torch.from_numpy(coef), torch.from_numpy(bias), names, metrics, len(latents))
        return self


__all__ = [
    "FINDERS", "AxisFinder", "GLMFinder", "LogisticFinder", "SVMFinder", "NotFittedError", "SVMSolution",
    "TopBottomSplit", "check_fit_inputs", "fit_linear_svm", "make_finder", "top_bottom_split",
]
