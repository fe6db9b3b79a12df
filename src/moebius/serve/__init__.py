"""``moebius serve``: an HTTP API (native ``/v1`` and IOPaint's ``/api/v1``) and a web editor at ``/``.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). ``create_app(settings)`` or
``create_app(pipeline=pipe)`` builds the ASGI app; weights load in its lifespan.
"""

from .app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
