"""Feature axes: fitting them (finders), disentangling them, and their file formats."""

from tlgan.axes.disentangle import cosine_matrix, disentangle, project_out
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.axes.finders import (
    FINDERS,
    AxisFinder,
    GLMFinder,
    LogisticFinder,
    NotFittedError,
    PCAFinder,
    SeFaFinder,
    SVMFinder,
    fit_linear_svm,
    make_finder,
    top_bottom_split,
)
from tlgan.axes.interfacegan import export_boundaries, import_boundaries

__all__ = [
    "FeatureAxes",
    "FINDERS",
    "AxisFinder",
    "GLMFinder",
    "LogisticFinder",
    "SVMFinder",
    "PCAFinder",
    "SeFaFinder",
    "NotFittedError",
    "make_finder",
    "fit_linear_svm",
    "top_bottom_split",
    "project_out",
    "disentangle",
    "cosine_matrix",
    "export_boundaries",
    "import_boundaries",
]
