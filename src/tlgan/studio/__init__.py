"""The web studio (`tlgan serve`): a FastAPI app and the page it serves from ``static/``.

Three layers: :mod:`~tlgan.studio.faces` (what a request means: the latent to draw),
:mod:`~tlgan.studio.server` (the models, shared by all requests) and :mod:`~tlgan.studio.app`
(the routes).
"""

from tlgan.studio.app import app_from_specs, create_app, encode_png
from tlgan.studio.faces import Faces
from tlgan.studio.server import Studio

__all__ = ["Studio", "Faces", "create_app", "app_from_specs", "encode_png"]
