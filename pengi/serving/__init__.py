"""`pengi serve`: an OpenAI-compatible HTTP server for Pengi and CLAP models, with dynamic batching and a web page.

`create_app` builds the FastAPI app (the model loads in its lifespan) from `ServeSettings`; the `pengi serve`
command (`pengi.cli.serve`) runs it under uvicorn. Needs the ``serve`` extra: ``pip install 'pengi[serve]'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:  # fastapi is imported only when the app is wanted
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
