"""The web studio (`tlgan serve`): a FastAPI app and the page it serves from ``static/``."""

from tlgan.studio.app import Studio, app_from_specs, create_app, encode_png

__all__ = ["Studio", "create_app", "app_from_specs", "encode_png"]
