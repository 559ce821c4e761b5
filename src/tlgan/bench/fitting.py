"""Fitting speed and agreement: tlgan's finders against scikit-learn on planted data.

Synthetic data with known answers: latents z ~ N(0, I) (n, d) and logits
``z @ W_true.T * scale + noise * N(0, 1)`` for ``a`` random unit directions ``W_true``.

* GLM: :class:`~tlgan.axes.finders.GLMFinder` against ``sklearn.linear_model.LinearRegression``
  on the same clipped logits (all ``a`` attributes).
* GLM against computing X^T X alone (float64, streamed in the same chunks on the same threads):
  the fit's floor, since its Gram matrix of [X, 1, Y] is one X^T X and a little more.
* SVM: :class:`~tlgan.axes.finders.SVMFinder` against ``sklearn.svm.SVC(kernel="linear")`` on
  the same InterFaceGAN top/bottom training sets (``ratio`` of n per side, ``svm_n`` attributes),
  and against InterFaceGAN's whole ``train_boundary`` procedure rebuilt from scikit-learn calls
  (:func:`interfacegan_procedure`) on ``svm_proc_n`` samples.

Each side is timed ``repeats`` times, interleaved, and the best time kept, so a burst of load
from elsewhere on a shared machine does not hurt one side alone. scikit-learn is imported lazily
(it is only needed here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from tlgan.axes.finders import DEFAULT_CLIP, GLMFinder, SVMFinder, fit_linear_svm, top_bottom_split
from tlgan.axes.finders.common import accumulate_gram
from tlgan.errors import TlganError

log = logging.getLogger(__name__)


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Limit torch and (when threadpoolctl is installed) BLAS to ``threads`` for the block."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            log.info("threadpoolctl not installed: BLAS keeps its own thread count")
            yield
        else:
            with threadpool_limits(limits=int(threads)):
                yield
    finally:
        torch.set_num_threads(before)


def _best_of(repeats: int, *runs: Callable[[], object]) -> list[float]:
    """Run each callable ``repeats`` times, interleaved; the best wall time of each."""
    best = [float("inf")] * len(runs)
    for _ in range(max(1, int(repeats))):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine between (k, d) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def planted_data(n: int, d: int, a: int, seed: int = 0, scale: float = 3.0, noise: float = 1.0):
    """(latents (n, d) float32, logits (n, a) float32, true unit directions (a, d) float32)."""
    g = torch.Generator().manual_seed(int(seed))
    latents = torch.randn(n, d, generator=g)
    truth = torch.nn.functional.normalize(torch.randn(a, d, generator=g), dim=1)
    logits = scale * (latents @ truth.T) + noise * torch.randn(n, a, generator=g)
    return latents, logits, truth


def gram_alone(x: np.ndarray, chunk_size: int = 16384) -> np.ndarray:
    """X^T X (D, D) in float64, streamed in chunks exactly as the GLM streams its Gram matrix."""
    dim = x.shape[1]

    def fill(start: int, stop: int, rows: np.ndarray) -> None:
        rows[:] = x[start:stop]

    return accumulate_gram(len(x), dim, chunk_size, fill)[0]


def interfacegan_procedure(
    x: np.ndarray, score: np.ndarray, ratio: float = 0.02, split_ratio: float = 0.7, seed: int = 0
) -> dict[str, object]:
    """InterFaceGAN's ``train_boundary`` for one attribute, rebuilt from NumPy and scikit-learn calls.

    Sort the samples by score; the top and bottom ``ratio`` become the positive and negative
    class; each is shuffled and split ``split_ratio`` / rest into training and validation; a
    ``SVC(kernel="linear")`` is fitted; its accuracy is measured on the validation samples and on
    all remaining samples (labelled by the sign of the score). Returns the unit boundary normal
    and both accuracies.
    """
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    order = np.argsort(score)[::-1]
    k = int(len(x) * ratio)
    top, bottom = order[:k], order[len(x) - k :]
    top, bottom = top[rng.permutation(k)], bottom[rng.permutation(k)]
    n_train = int(k * split_ratio)
    train = np.concatenate([x[top[:n_train]], x[bottom[:n_train]]])
    train_label = np.concatenate([np.ones(n_train), np.zeros(n_train)])
    val = np.concatenate([x[top[n_train:]], x[bottom[n_train:]]])
    val_label = np.concatenate([np.ones(k - n_train), np.zeros(k - n_train)])
    clf = SVC(kernel="linear").fit(train, train_label)
    val_accuracy = float((clf.predict(val) == val_label).mean())
    rest = order[k : len(x) - k]
    remaining_accuracy = float((clf.predict(x[rest]) == (score[rest] > 0)).mean())
    normal = clf.coef_.reshape(-1)
    return {
        "boundary": normal / np.linalg.norm(normal),
        "val_accuracy": val_accuracy,
        "remaining_accuracy": remaining_accuracy,
    }


def bench_fit(
    n: int = 200_000,
    d: int = 512,
    a: int = 40,
    seed: int = 0,
    svm_n: int = 3,
    quick: bool = False,
    ratio: float = 0.02,
    scale: float = 3.0,
    noise: float = 1.0,
    repeats: int = 2,
    threads: int | None = None,
    svm_proc_n: int = 20_000,
    svm_proc_attributes: int = 4,
) -> dict[str, float]:
    """Time the GLM and SVM finders against scikit-learn; returns a flat dict of figures.

    Args:
        n, d, a: samples, latent size, attributes of the planted data.
        seed: seed of the data.
        svm_n: attributes (the first ones) used in the SVM comparison.
        quick: a small smoke-test size (n=4000, d=32, a=4, svm_n=2, one repeat).
        ratio: InterFaceGAN's top/bottom fraction for the SVM.
        scale, noise: logit = scale * (z . w_true) + noise * N(0, 1).
        repeats: timings are the best of this many interleaved runs.
        threads: if given, torch (and BLAS, when threadpoolctl is installed) use this many threads.
        svm_proc_n, svm_proc_attributes: samples (the first ones) and attributes of the comparison
            with InterFaceGAN's whole procedure.

    Keys: ``fit_glm_seconds``, ``fit_glm_sklearn_seconds``, ``fit_glm_speedup_vs_sklearn``,
    ``glm_cosine_vs_sklearn`` (mean over attributes), ``glm_cosine_to_truth`` (mean);
    ``fit_svm_seconds`` (SVMFinder.fit on svm_n attributes: selection, solves, metrics),
    ``fit_svm_sklearn_seconds`` (SVC on the same training sets), ``fit_svm_speedup_vs_sklearn``
    (their ratio), ``fit_svm_solver_seconds`` and ``fit_svm_solver_speedup_vs_sklearn`` (the solver
    alone on those training sets: the like-for-like comparison with SVC; both are single-threaded),
    ``svm_cosine_vs_sklearn`` (min over attributes), ``svm_cosine_to_truth`` (mean);
    ``fit_glm_gram_seconds`` (X^T X alone) and ``fit_glm_over_gram`` (GLM fit / X^T X, target <= 1.5);
    ``fit_svm_per_attribute_seconds`` and ``interfacegan_per_attribute_seconds`` (SVMFinder.fit with
    its metrics vs InterFaceGAN's procedure, per attribute, on svm_proc_n samples) and
    ``fit_svm_speedup_vs_interfacegan`` (target >= 12), ``svm_cosine_vs_interfacegan`` (min); plus
    the sizes used.
    """
    try:
        from sklearn.linear_model import LinearRegression
        from sklearn.svm import SVC
    except ImportError:
        raise TlganError(
            "the fitting benchmark compares against scikit-learn; install it with "
            "`pip install scikit-learn` (or the project's [bench] extra)"
        ) from None
    if quick:
        n, d, a, svm_n, repeats, svm_proc_n, svm_proc_attributes = 4000, 32, 4, 2, 1, 4000, 2
    svm_n = max(1, min(int(svm_n), int(a)))
    with _threads(threads):
        latents, logits, truth = planted_data(n, d, a, seed, scale, noise)
        x_np = latents.numpy()
        clipped = logits.clamp(-DEFAULT_CLIP, DEFAULT_CLIP).numpy()
        result: dict[str, float] = {
            "fit_n": n,
            "fit_d": d,
            "fit_attributes": a,
            "fit_threads": torch.get_num_threads(),
        }

        # --- GLM: all attributes at once vs LinearRegression on the same clipped logits.
        fits: dict[str, object] = {}

        def ours_glm():
            fits["glm"] = GLMFinder(clip=DEFAULT_CLIP).fit(latents, logits)

        def sklearn_glm():
            fits["sk_glm"] = LinearRegression().fit(x_np, clipped)

        def gram():
            fits["gram"] = gram_alone(x_np)

        log.info("bench fit: GLM on %d x %d with %d attributes", n, d, a)
        glm_s, gram_s, sk_glm_s = _best_of(repeats, ours_glm, gram, sklearn_glm)
        ours_coef = fits["glm"].coef_.numpy()
        sk_coef = np.asarray(fits["sk_glm"].coef_).reshape(a, d)
        result.update(
            {
                "fit_glm_seconds": round(glm_s, 4),
                "fit_glm_sklearn_seconds": round(sk_glm_s, 4),
                "fit_glm_speedup_vs_sklearn": round(sk_glm_s / glm_s, 2),
                "fit_glm_gram_seconds": round(gram_s, 4),
                "fit_glm_over_gram": round(glm_s / gram_s, 3),
                "glm_cosine_vs_sklearn": float(_cosines(ours_coef, sk_coef).mean()),
                "glm_cosine_to_truth": float(_cosines(ours_coef, truth.numpy()).mean()),
            }
        )

        # --- SVM: InterFaceGAN's top/bottom training sets for the first svm_n attributes.
        finder = SVMFinder(ratio=ratio)
        splits = [
            top_bottom_split(logits[:, j], ratio, finder.val_fraction, finder.seed, column=j)
            for j in range(svm_n)
        ]
        train_sets = [(x_np[s.train_index.numpy()].astype(np.float64), s.train_label.numpy()) for s in splits]

        def ours_svm():
            fits["svm"] = SVMFinder(ratio=ratio).fit(latents, logits[:, :svm_n])

        def ours_solver():
            fits["solver"] = [fit_linear_svm(x, y, C=finder.C, tol=finder.tol).weight for x, y in train_sets]

        def sklearn_svm():
            fits["sk_svm"] = [
                SVC(kernel="linear", C=finder.C).fit(x, y).coef_.reshape(-1) for x, y in train_sets
            ]

        log.info("bench fit: SVM on %d attributes, %d training samples each", svm_n, len(train_sets[0][1]))
        svm_s, solver_s, sk_svm_s = _best_of(repeats, ours_svm, ours_solver, sklearn_svm)
        sk_w = np.stack(fits["sk_svm"])
        ours_w = fits["svm"].coef_.numpy()
        result.update(
            {
                "fit_svm_attributes": svm_n,
                "fit_svm_n_train": int(len(train_sets[0][1])),
                "fit_svm_seconds": round(svm_s, 4),
                "fit_svm_solver_seconds": round(solver_s, 4),
                "fit_svm_sklearn_seconds": round(sk_svm_s, 4),
                "fit_svm_speedup_vs_sklearn": round(sk_svm_s / svm_s, 2),
                "fit_svm_solver_speedup_vs_sklearn": round(sk_svm_s / solver_s, 2),
                "svm_cosine_vs_sklearn": float(_cosines(ours_w, sk_w).min()),
                "svm_cosine_to_truth": float(_cosines(ours_w, truth[:svm_n].numpy()).mean()),
            }
        )

        # --- SVM with its metrics against InterFaceGAN's whole procedure, per attribute.
        m = max(1, min(int(svm_proc_attributes), int(a)))
        proc_x, proc_scores = x_np[:svm_proc_n], logits[:svm_proc_n, :m]

        def ours_whole():
            fits["svm_whole"] = SVMFinder(ratio=ratio).fit(latents[:svm_proc_n], proc_scores)

        def interfacegan():
            fits["ifg"] = [interfacegan_procedure(proc_x, proc_scores[:, j].numpy(), ratio) for j in range(m)]

        log.info(
            "bench fit: SVM finder vs InterFaceGAN's procedure, %d attributes on %d samples", m, len(proc_x)
        )
        whole_s, ifg_s = _best_of(repeats, ours_whole, interfacegan)
        ifg_w = np.stack([r["boundary"] for r in fits["ifg"]])
        result.update(
            {
                "svm_proc_n": int(len(proc_x)),
                "svm_proc_attributes": m,
                "fit_svm_per_attribute_seconds": round(whole_s / m, 4),
                "interfacegan_per_attribute_seconds": round(ifg_s / m, 4),
                "fit_svm_speedup_vs_interfacegan": round(ifg_s / whole_s, 2),
                "svm_cosine_vs_interfacegan": float(_cosines(fits["svm_whole"].coef_.numpy(), ifg_w).min()),
            }
        )
    return result


__all__ = ["bench_fit", "gram_alone", "interfacegan_procedure", "planted_data"]
