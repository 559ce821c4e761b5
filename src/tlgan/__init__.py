"""tlgan: transparent latent spaces for pretrained image generators.

The pipeline, one sub-package per step: ``models`` (generators and classifiers we wrap),
``toyfaces`` (the offline world with ground truth), ``sampling`` (z -> image -> scores,
cached in run folders), ``axes`` (fitting and disentangling feature axes), ``editing``,
``inversion`` (photos -> latents), ``evaluation`` (metrics and reports), ``studio`` (web app),
``cli``.
"""

__version__ = "0.1.0"
