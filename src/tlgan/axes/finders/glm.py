"""``glm``: TL-GAN's feature axes, least squares of each attribute's score on [z, 1]."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from tlgan.axes.finders.common import (
    FINDERS,
    AxisFinder,
    NotFittedError,
    _as_matrix,
    _blas_threads,
    _count_bad_rows,
    _numpy,
    _ordered_map,
    _solve_spd,
    _thread_count,
    accumulate_gram,
    check_finite_values,
    check_fit_inputs,
)
from tlgan.errors import TlganError

log = logging.getLogger(__name__)

# logit(1 - 1e-4): probabilities are kept inside [1e-4, 1 - 1e-4] by default.
DEFAULT_CLIP = 9.21
TARGETS = ("logit", "probability")


@FINDERS.register(
    "glm",
    "least squares of the clipped logit (or rescaled probability) on z (TL-GAN); streamed normal equations",
)
class GLMFinder(AxisFinder):
    """Ordinary least squares of each attribute's logit on [z, 1] (TL-GAN's feature axes).

    All attributes are fitted at once from one accumulated Gram matrix of [z, 1, logits] in
    float64 (BLAS syrk, chunk by chunk, chunks spread over ``torch.get_num_threads()`` threads and
    summed in order), so memory is O((D + A)^2) whatever N is. Logits are
    clipped to +-``clip`` first (default 9.21: probabilities in [1e-4, 1 - 1e-4]) so saturated
    classifier outputs do not dominate the fit; ``clip=None`` turns clipping off. With
    ``target="probability"`` the regression target is TL-GAN's own: the classifier's probability
    rescaled to [-1, 1] (``2 * sigmoid(logit) - 1``; ``clip`` is then unused). The axis is
    the coefficient vector made unit length. Runs on the CPU (NumPy/SciPy).

    Args:
        clip: clip logits to [-clip, clip] (logit units) before fitting, or None.
        target: "logit" (the clipped logit) or "probability" (2 * probability - 1, as TL-GAN).
        chunk_size: rows per accumulation step (extra memory: chunk_size * (D + A + 1) * 8 bytes).

    Metrics per attribute: ``r2`` (coefficient of determination of the clipped-logit fit,
    in-sample), ``sign_accuracy`` (fraction of samples where sign(prediction) == sign(logit);
    set by ``fit``, and by :meth:`evaluate` for streamed fits), ``n_samples``.

    Streaming: ``reset()``, ``partial_fit(latents_chunk, scores_chunk)`` any number of times,
    then ``finalize()``; the result equals ``fit`` on all the chunks at once.
    """

    name = "glm"
    _fitted_attributes = AxisFinder._fitted_attributes + ("r2_",)

    def __init__(self, clip: float | None = DEFAULT_CLIP, chunk_size: int = 16384, target: str = "logit"):
        self.clip = clip
        self.target = target
        self.chunk_size = chunk_size

    def _not_fitted_message(self, item: str) -> str:
        if self.__dict__.get("_state") is not None:
            return (
                f"GLMFinder has accumulated {self._state['n']} samples but has no {item} yet: call finalize()"
            )
        return super()._not_fitted_message(item)

    def _check_clip(self) -> None:
        if self.target not in TARGETS:
            raise TlganError(f"target must be one of {', '.join(map(repr, TARGETS))} (got {self.target!r})")
        if self.clip is not None and not float(self.clip) > 0:
            raise TlganError(f"clip must be a positive number of logit units or None (got {self.clip!r})")

    def _target(self, y: np.ndarray) -> np.ndarray:
        """The regression target of logits ``y``, as float64."""
        y = y.astype(np.float64)
        if self.target == "probability":
            return np.tanh(0.5 * y)  # = 2 * sigmoid(y) - 1, without overflow
        return y if self.clip is None else np.clip(y, -float(self.clip), float(self.clip), out=y)

    # -- streaming
    def reset(self) -> GLMFinder:
        """Forget accumulated statistics and fitted state."""
        self._state = None
        for item in self._fitted_attributes:
            self.__dict__.pop(item, None)
        return self

    def partial_fit(self, latents, scores, attributes: Sequence[str] | None = None) -> GLMFinder:
        """Accumulate one chunk: ``latents`` (n, D), ``scores`` (n, A) logits. Call finalize() at the end."""
        self._check_clip()
        latents = _as_matrix(latents, "latents")
        scores = _as_matrix(scores, "scores")
        if latents.ndim != 2 or scores.ndim != 2 or len(latents) != len(scores):
            raise TlganError(
                f"partial_fit needs latents (n, D) and scores (n, A) with the same n; "
                f"got {tuple(latents.shape)} and {tuple(scores.shape)}"
            )
        _count_bad_rows(latents, "latents")
        _count_bad_rows(scores, "scores")
        state = self.__dict__.get("_state")
        if state is not None:
            if latents.shape[1] != state["dim"] or scores.shape[1] != len(state["names"]):
                raise TlganError(
                    f"chunk has {latents.shape[1]} latent dims and {scores.shape[1]} attributes, earlier "
                    f"chunks had {state['dim']} and {len(state['names'])}; call reset() to start over"
                )
            if attributes is not None and [str(a) for a in attributes] != state["names"]:
                raise TlganError("attribute names differ from the earlier chunks; call reset() to start over")
        else:
            names = (
                [f"attribute_{i}" for i in range(scores.shape[1])]
                if attributes is None
                else [str(a) for a in attributes]
            )
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

    def _start(self, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
        dim, n_attr = x.shape[1], y.shape[1]
        head = slice(0, max(1, int(self.chunk_size)))
        # Shift by the first chunk's means: the centred statistics are then differences of
        # small numbers, which keeps float64 accurate even for latents far from the origin.
        self._state = {
            "dim": dim,
            "names": list(names),
            "n": 0,
            "shift_x": x[head].mean(0, dtype=np.float64),
            "shift_y": self._target(y[head]).mean(0),
            "gram": np.zeros((dim + 1 + n_attr, dim + 1 + n_attr), dtype=np.float64),
            "lo": np.full(n_attr, np.inf),
            "hi": np.full(n_attr, -np.inf),
        }

    def _accumulate(self, x: np.ndarray, y: np.ndarray, progress: bool = False) -> None:
        """Add the Gram matrix of [x - shift_x, 1, target(y) - shift_y] over all rows to the state."""
        state = self._state
        dim = state["dim"]

        def fill(start: int, stop: int, rows: np.ndarray):
            target = self._target(y[start:stop])
            np.subtract(x[start:stop], state["shift_x"], out=rows[:, :dim])
            rows[:, dim] = 1.0
            np.subtract(target, state["shift_y"], out=rows[:, dim + 1 :])
            return target.min(0), target.max(0)

        gram, extremes = accumulate_gram(
            len(x), state["gram"].shape[0], self.chunk_size, fill, progress, desc="glm"
        )
        state["gram"] += gram
        for lo, hi in extremes:
            np.minimum(state["lo"], lo, out=state["lo"])
            np.maximum(state["hi"], hi, out=state["hi"])
        state["n"] += len(x)

    def finalize(self) -> GLMFinder:
        """Solve the accumulated normal equations; sets coef_, bias_, axes_, intercepts_, metrics_, r2_."""
        state = self.__dict__.get("_state")
        if state is None or state["n"] == 0:
            raise NotFittedError("GLMFinder has no data: call partial_fit(latents, scores) before finalize()")
        dim, names, n = state["dim"], state["names"], state["n"]
        if n <= dim + 1:
            raise TlganError(
                f"the GLM needs more samples than latent dimensions + 1 (got N={n} for D={dim}); "
                f"sample more latents"
            )
        constant = [names[i] for i in np.flatnonzero(state["hi"] <= state["lo"])]
        if constant:
            raise TlganError(
                f"cannot fit an axis for {', '.join(map(repr, constant))}: its regression target "
                f"({self.target}) is the same for every sample (clip={self.clip}); drop that attribute "
                f"or check the classifier output"
            )
        gram = state["gram"]
        sxx, sx, count = gram[:dim, :dim], gram[:dim, dim], gram[dim, dim]
        sxy, sy = gram[:dim, dim + 1 :], gram[dim, dim + 1 :]
        syy = np.diagonal(gram[dim + 1 :, dim + 1 :])
        mx, my = sx / count, sy / count
        cxx = sxx - count * np.outer(mx, mx)
        cxy = sxy - count * np.outer(mx, my)
        cyy = np.maximum(syy - count * my * my, 0.0)
        with _blas_threads(1):  # one small factorisation: threads only add contention
            beta = _solve_spd(cxx, cxy, "GLM")  # (D, A)
        bias = my - mx @ beta + state["shift_y"] - state["shift_x"] @ beta
        sse = np.maximum(cyy - (beta * cxy).sum(0), 0.0)
        r2 = 1.0 - sse / cyy
        metrics = {a: {"r2": float(r2[i]), "n_samples": int(n)} for i, a in enumerate(names)}
        self._set_fitted(torch.from_numpy(beta.T.copy()), torch.from_numpy(bias), names, metrics, n)
        self.r2_ = torch.from_numpy(r2).float()
        return self

    # -- one-shot
    def fit(self, latents, scores, attributes: Sequence[str] | None = None) -> GLMFinder:
        """Fit on all samples (accumulated in chunks of ``chunk_size``), then measure sign accuracy."""
        self._check_clip()
        # The Gram matrix's diagonal sums the squares of every latent value, so it is finite
        # exactly when the latents are, and finalize() tests constant targets: no separate
        # passes over all the latents.
        latents, scores, names = check_fit_inputs(latents, scores, attributes, values=False)
        x, y = _numpy(latents), _numpy(scores)
        self.reset()
        self._start(x, y, names)
        self._accumulate(x, y, progress=True)
        if not np.isfinite(np.diagonal(self._state["gram"])).all():
            check_finite_values(latents, scores)
        self.finalize()
        accuracy = self._sign_accuracy(x, y)
        for i, a in enumerate(names):
            self.metrics_[a]["sign_accuracy"] = float(accuracy[i])
        return self

    def _sign_accuracy(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fraction of rows where sign(prediction) == sign(logit), per attribute (A,)."""
        # Only signs are compared, so float32 products in the latents' own dtype are ample.
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        coef = _numpy(self.coef_).T.astype(dtype)
        bias = _numpy(self.bias_).astype(dtype)
        step = max(1, int(self.chunk_size))

        def chunk_agree(start: int) -> np.ndarray:
            pred = x[start : start + step] @ coef
            return ((pred > -bias) == (y[start : start + step] > 0)).sum(0)

        with _blas_threads(1):
            agree = np.sum(list(_ordered_map(chunk_agree, range(0, len(x), step), _thread_count())), axis=0)
        return agree / len(x)

    def _score_chunks(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sign accuracy (A,), R^2 of the clipped logits (A,)), one chunk of rows at a time."""
        coef = _numpy(self.coef_).T.astype(np.float64)
        bias = _numpy(self.bias_).astype(np.float64)
        step = max(1, int(self.chunk_size))

        def chunk_scores(start: int):
            pred = x[start : start + step].astype(np.float64) @ coef + bias
            raw = y[start : start + step]
            target = self._target(raw)
            return (
                ((pred > 0) == (raw > 0)).sum(0),
                ((target - pred) ** 2).sum(0),
                target.sum(0),
                (target**2).sum(0),
            )

        with _blas_threads(1):
            parts = list(_ordered_map(chunk_scores, range(0, len(x), step), _thread_count()))
        agree, sse, total, squares = (np.sum([p[k] for p in parts], axis=0) for k in range(4))
        n = len(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = 1.0 - sse / (squares - total**2 / n)
        return agree / n, r2

    def evaluate(self, latents, scores) -> dict[str, dict[str, float]]:
        """Per attribute {r2, sign_accuracy} of the fitted model on ``latents`` (N, D), ``scores`` (N, A) logits.

        Streams over ``chunk_size`` rows, so it can score data of any size (e.g. after partial_fit).
        """
        coef = self.coef_
        latents, scores = _as_matrix(latents, "latents"), _as_matrix(scores, "scores")
        if (
            latents.ndim != 2
            or scores.ndim != 2
            or len(latents) != len(scores)
            or len(latents) == 0
            or latents.shape[1] != coef.shape[1]
            or scores.shape[1] != coef.shape[0]
        ):
            raise TlganError(
                f"evaluate needs latents (N, {coef.shape[1]}) and scores (N, {coef.shape[0]}) with the "
                f"same N > 0; got {tuple(latents.shape)} and {tuple(scores.shape)}"
            )
        _count_bad_rows(latents, "latents")
        _count_bad_rows(scores, "scores")
        accuracy, r2 = self._score_chunks(_numpy(latents), _numpy(scores))
        return {
            a: {"r2": float(r2[i]), "sign_accuracy": float(accuracy[i])}
            for i, a in enumerate(self.attributes_)
        }
