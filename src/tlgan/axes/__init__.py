"""Feature axes: fitting them (finders), disentangling them, and their file format."""
from tlgan.axes.feature_axes import FeatureAxes

__all__ = ["FeatureAxes"]
