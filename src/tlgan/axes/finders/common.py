"""What every axis finder shares: the registry, input checks, the base estimator, thread helpers."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.registry import Registry

log = logging.getLogger(__name__)

FINDERS: Registry = Registry("axis finder")

# The finder used when none is named, per latent space (library, `tlgan fit`, `tlgan demo`, the
# studio), chosen by measurement against known truth with the bundled classifier's labels, 20,000
# samples (BENCHMARKS.md, "Finders in z and w"):
# - w (toyfaces-style, attributes exactly linear in w): logistic, every attribute >= 0.990
#   (mean 0.994), where glm reaches 0.974 and the SVM on the top/bottom 2 % 0.72; in an
#   anisotropic w (toyfaces-style-aniso, condition number 700) logistic >= 0.982, glm 0.975;
# - z (toyfaces-style, attributes non-linear in z as in a StyleGAN's z): glm, mean 0.911 (min
#   0.870) against each score's average gradient E[grad_z s] (16,384 latents of their own seed),
#   logistic 0.894 (0.853), svm 0.38. Where z is exactly linear (toyfaces-render) logistic would
#   win (0.995 against glm's 0.979), but z is where generators are non-linear, so glm.
# wp has no axes of its own (w axes are applied to chosen layers), so it follows w.
DEFAULT_METHODS: dict[str, str] = {"z": "glm", "w": "logistic", "wp": "logistic"}

#: The default finder of z, kept for code that imports one name; see :func:`default_method`.
DEFAULT_METHOD = DEFAULT_METHODS["z"]

# Finder options that suit a kind of score, applied unless the caller names the option. A CLIP
# logit is the logit scale times a gap of two cosines: its sign says which phrase fits the image
# better, but its size also follows the lighting, the background and the other attributes. So
# glm regresses CLIP's own two-phrase probability (TL-GAN's target, 2 * sigmoid(logit) - 1), not
# the logit: on 20,000 toyfaces-render samples this lifts the mean cosine to the true axes from
# 0.953 to 0.982 with the bundled toyfaces-clip, and its lowest from 0.889 to 0.971 (BENCHMARKS.md,
# "toyfaces-clip: attributes in words").
SCORE_OPTIONS: dict[str, dict[str, dict]] = {"clip:": {"glm": {"target": "probability"}}}


def score_options(method: str, classifier: str | None, given: dict | None = None) -> dict:
    """The options of finder ``method`` for scores of ``classifier`` (a classifier spec such as a
    run's ``clip:MODEL``): :data:`SCORE_OPTIONS` for that kind of classifier, updated with the
    options ``given`` (which win). A classifier without entries gets ``given`` unchanged."""
    options = {}
    for prefix, by_method in SCORE_OPTIONS.items():
        if classifier is not None and str(classifier).startswith(prefix):
            options.update(by_method.get(method, {}))
    options.update(given or {})
    return options


def default_method(space: str = "z") -> str:
    """The finder used when none is named for axes fitted in ``space`` (``z``, ``w`` or ``wp``).

    Raises TlganError for an unknown space.
    """
    if space not in DEFAULT_METHODS:
        raise TlganError(f"no latent space {space!r}; tlgan's spaces are {', '.join(DEFAULT_METHODS)}")
    return DEFAULT_METHODS[space]


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


def check_finite_values(latents: torch.Tensor, scores: torch.Tensor) -> None:
    """TlganError naming the rows of ``latents`` (N, D) or ``scores`` (N, A) that hold NaN or infinite values."""
    _count_bad_rows(latents, "latents")
    _count_bad_rows(scores, "scores")


def check_fit_inputs(
    latents: Any, scores: Any, attributes: Sequence[str] | None = None, *, values: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Validate the arguments of ``fit``; returns (latents (N, D), scores (N, A), names (A,)).

    Raises TlganError for wrong dimensions, a sample-count mismatch, NaN/inf rows (naming the
    array and how many rows), a name list of the wrong length or with duplicates, and attributes
    whose scores are constant (nothing to fit). ``values=False`` skips the NaN/inf test of the
    latents (a pass over all of them) and the constant-score test, for a finder that sees every
    value anyway: it calls :func:`check_finite_values` when its own sums come out non-finite
    and tests constant targets itself.
    """
    latents = _as_matrix(latents, "latents")
    scores = _as_matrix(scores, "scores")
    if latents.ndim != 2:
        raise TlganError(
            f"latents must be a 2-D (N, D) array of N latent vectors; got shape {tuple(latents.shape)}"
        )
    if scores.ndim != 2:
        hint = " (for a single attribute pass scores[:, None])" if scores.ndim == 1 else ""
        raise TlganError(
            f"scores must be a 2-D (N, A) array of logits, one column per attribute; "
            f"got shape {tuple(scores.shape)}{hint}"
        )
    if len(latents) != len(scores):
        raise TlganError(
            f"latents have {len(latents)} rows but scores have {len(scores)}; "
            f"they must describe the same samples, row for row"
        )
    if len(latents) == 0 or latents.shape[1] == 0 or scores.shape[1] == 0:
        raise TlganError(f"nothing to fit: latents {tuple(latents.shape)}, scores {tuple(scores.shape)}")
    if values:
        _count_bad_rows(latents, "latents")
    _count_bad_rows(scores, "scores")  # always: clipping would turn an infinite logit into a finite target
    n_attr = scores.shape[1]
    if attributes is None:
        names = [f"attribute_{i}" for i in range(n_attr)]
    else:
        names = [str(a) for a in attributes]
        if len(names) != n_attr:
            raise TlganError(
                f"got {len(names)} attribute names for {n_attr} score columns; "
                f"give exactly one name per column of scores"
            )
        dupes = sorted({a for a in names if names.count(a) > 1})
        if dupes:
            raise TlganError(f"attribute names must be unique; repeated: {', '.join(dupes)}")
    if values:
        check_varying_scores(scores, names)
    return latents, scores, names


def check_varying_scores(scores: torch.Tensor, names: Sequence[str]) -> None:
    """TlganError naming the attributes whose scores (N, A) are the same for every sample (nothing to fit)."""
    span = scores.amax(dim=0) - scores.amin(dim=0)
    constant = [names[i] for i in torch.nonzero(span == 0).flatten().tolist()]
    if constant:
        raise TlganError(
            f"cannot fit an axis for {', '.join(repr(c) for c in constant)}: its score is the same for "
            f"every sample; drop that attribute or check the classifier output"
        )


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


def accumulate_gram(
    n: int,
    width: int,
    chunk_size: int,
    fill: Callable[[int, int, np.ndarray], Any],
    progress: bool = False,
    desc: str = "gram",
    dtype=np.float64,
) -> tuple[np.ndarray, list[Any]]:
    """Sum over chunks of rows of ``rows^T rows``: a (width, width) float64 Gram matrix of n rows.

    ``fill(start, stop, rows)`` writes the rows ``start:stop`` into ``rows`` ((stop - start, width)
    of ``dtype``, the precision of each chunk's product; the sum over chunks is float64) and may
    return anything (collected per chunk, in order). Chunks of
    ``chunk_size`` rows run on :func:`_thread_count` threads with single-threaded BLAS, each
    with its own reusable buffer, and are summed in order, so the result does not depend on timing.
    """
    step = max(1, int(chunk_size))
    local = threading.local()

    def chunk(start: int):
        stop = min(n, start + step)
        buffer = getattr(local, "buffer", None)
        if buffer is None or len(buffer) < stop - start:
            buffer = local.buffer = np.empty((min(step, n), width), dtype=dtype)
        rows = buffer[: stop - start]
        extra = fill(start, stop, rows)
        return _gram(rows), extra

    starts = range(0, n, step)
    total = np.zeros((width, width), dtype=np.float64)
    extras: list[Any] = []
    with _blas_threads(1):
        for gram, extra in tqdm(
            _ordered_map(chunk, starts, _thread_count()),
            total=len(starts),
            desc=desc,
            unit="chunk",
            leave=False,
            disable=None if progress else True,
        ):
            total += gram
            extras.append(extra)
    return total, extras


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
    log.warning(
        "%s: the latent covariance is singular (%d of %d directions carry no variance); "
        "using the minimum-norm solution",
        what,
        int((~keep).sum()),
        len(evals),
    )
    inv = np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0)
    return evecs @ (inv.reshape(-1, *([1] * (rhs.ndim - 1))) * (evecs.T @ rhs))


# --------------------------------------------------------------------------- base class
class AxisFinder:
    """Base class of the finders; see the module docstring for the contract."""

    name = "base"
    #: True for finders whose ``fit`` also takes ``generator=`` and ``space=`` (the unsupervised ones).
    uses_generator = False
    _fitted_attributes = ("coef_", "bias_", "axes_", "intercepts_", "metrics_", "attributes_", "n_samples_")

    def __getattr__(self, item: str):
        # Only called when normal lookup fails: a fitted attribute that is not there yet.
        if item in type(self)._fitted_attributes:
            raise NotFittedError(self._not_fitted_message(item))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def _not_fitted_message(self, item: str) -> str:
        return (
            f"this {type(self).__name__} is not fitted yet, so it has no {item}; "
            f"call fit(latents, scores, attributes) first"
        )

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (the whole configuration), as given."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, latents, scores, attributes: Sequence[str] | None = None) -> AxisFinder:
        raise NotImplementedError

    def _set_fitted(
        self,
        coef: torch.Tensor,
        bias: torch.Tensor,
        names: list[str],
        metrics: dict[str, dict[str, float]],
        n_samples: int,
    ) -> None:
        coef = coef.detach().to("cpu", torch.float64)
        bias = bias.detach().to("cpu", torch.float64).reshape(-1)
        norms = coef.norm(dim=1)
        flat = [names[i] for i in torch.nonzero(~(norms > 0)).flatten().tolist()]
        if flat:
            raise TlganError(
                f"the fitted direction of {', '.join(map(repr, flat))} is zero: the scores do not vary "
                f"with the latents; check the classifier or drop the attribute"
            )
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
            raise TlganError(
                f"latents of shape {tuple(latents.shape)} do not match this finder, "
                f"which was fitted on vectors of size {coef.shape[1]}"
            )
        return latents.float() @ coef.T.to(latents.device) + self.bias_.to(latents.device)

    def to_feature_axes(
        self, attributes: Sequence[str] | None = None, space: str = "z", generator: str = "unknown"
    ) -> FeatureAxes:
        """The fitted axes as a FeatureAxes (method = this finder's name, info = its parameters).

        ``attributes`` names the A rows (default: the names given to ``fit``); it must have one
        name per fitted attribute.
        """
        axes = self.axes_
        names = self.attributes_ if attributes is None else [str(a) for a in attributes]
        if len(names) != len(axes):
            raise TlganError(
                f"got {len(names)} attribute names for {len(axes)} fitted axes; give one name per axis "
                f"(fitted: {', '.join(self.attributes_)})"
            )
        metrics = {
            new: dict(self.metrics_.get(old, {})) for new, old in zip(names, self.attributes_, strict=True)
        }
        info = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in self.get_params().items()}
        return FeatureAxes(
            axes.clone(),
            names,
            space=space,
            generator=generator,
            method=self.name,
            metrics=metrics,
            info=info,
        )


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _subclasses(sub)
    return out


def make_finder(name: str, **kwargs) -> AxisFinder:
    """Build the registered finder ``name`` with constructor arguments ``kwargs``."""
    FINDERS.check(name)
    cls = {c.name: c for c in _subclasses(AxisFinder)}.get(name)
    if cls is not None:
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TlganError(
                f"axis finder {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(params)}"
            )
    return FINDERS.create(name, **kwargs)
