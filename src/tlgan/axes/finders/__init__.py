"""Axis finders: estimators that fit latent directions, one module per finder.

Every finder follows the same contract (scikit-learn style):

* the constructor arguments are the whole configuration, stored as given;
* ``fit(latents, scores, attributes=None) -> self`` with ``latents`` (N, D) and ``scores``
  (N, A) classifier **logits** (probability = sigmoid(logit)), one column per attribute;
  finders with ``uses_generator = True`` also take ``generator=`` and ``space=`` (sefa needs
  the generator; pca uses it to read activations);
* fitted state lives in attributes ending in ``_``, set only by fitting:
  ``coef_`` (K, D) and ``bias_`` (K,) of the linear function ``latents @ coef_.T + bias_``;
  ``axes_`` (K, D) = ``coef_`` rows scaled to unit length; ``intercepts_`` (K,) =
  ``bias_ / |coef_|``; ``metrics_`` (name -> {metric: number}); ``attributes_`` (the K names);
* ``to_feature_axes(...)`` packages the result as a :class:`~tlgan.axes.FeatureAxes`.

Supervised finders give one axis per attribute (K = A) and ``latents @ axes_.T + intercepts_``
is the signed distance to each attribute's decision boundary:

``glm``       TL-GAN: least squares of the (clipped) logit, or of the probability rescaled to
              [-1, 1], on [z, 1], all attributes at once through streamed float64 normal equations.
``logistic``  logistic regression of the label (logit > 0) on z, all attributes at once (L-BFGS).
``svm``       InterFaceGAN: a linear hinge-loss SVM with an unregularised intercept on the top and
              bottom ``ratio`` of samples by score, solved by a primal-dual interior-point method.

Unsupervised finders ignore the scores and give K components named ``pc0``, ``pc1``, ... with
their variance or eigenvalue (``values_``); :func:`tlgan.evaluation.naming.name_directions` names them:

``pca``       GANSpace: principal components of the latents, or of an early layer's activations
              regressed back to the latent.
``sefa``      SeFa: the top eigenvectors of A^T A for the generator's first latent-to-feature weight A.
"""

from tlgan.axes.finders.common import (
    DEFAULT_METHOD,
    DEFAULT_METHODS,
    FINDERS,
    AxisFinder,
    NotFittedError,
    check_fit_inputs,
    default_method,
    make_finder,
    score_options,
)
from tlgan.axes.finders.glm import DEFAULT_CLIP, GLMFinder
from tlgan.axes.finders.logistic import LogisticFinder
from tlgan.axes.finders.pca import PCAFinder
from tlgan.axes.finders.sefa import SeFaFinder
from tlgan.axes.finders.svm import SVMFinder, SVMSolution, TopBottomSplit, fit_linear_svm, top_bottom_split

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_METHODS",
    "default_method",
    "FINDERS",
    "AxisFinder",
    "GLMFinder",
    "LogisticFinder",
    "SVMFinder",
    "PCAFinder",
    "SeFaFinder",
    "NotFittedError",
    "SVMSolution",
    "TopBottomSplit",
    "DEFAULT_CLIP",
    "check_fit_inputs",
    "fit_linear_svm",
    "make_finder",
    "score_options",
    "top_bottom_split",
]
