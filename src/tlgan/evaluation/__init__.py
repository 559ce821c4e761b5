"""Evaluation: measurements of runs, axes and edits (metrics), their figures, and the HTML report."""

from tlgan.evaluation.metrics import (
    axis_geometry,
    compare_correlations,
    compare_methods,
    cosine_to_truth,
    edit_effect,
    label_correlation,
    learning_curve,
    separability,
)
from tlgan.evaluation.report import write_report

__all__ = [
    "axis_geometry",
    "compare_correlations",
    "compare_methods",
    "cosine_to_truth",
    "edit_effect",
    "label_correlation",
    "learning_curve",
    "separability",
    "write_report",
]
