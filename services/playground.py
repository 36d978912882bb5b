"""`GET /playground`: try GenView in a browser. Upload an image and see its foreground map, the noise level the
policy chose, the views and the quality of the pair (original, first view), with the API's JSON beside them.

The page is one static file (`playground.html`: inline CSS and script, no CDN, works offline). Its script calls
this server's own routes with relative URLs (`POST generate`, `GET basis`, `GET views/…`, `POST score`), so the
same page serves `genview serve` and a generator API (where it says that no scorer answers). It holds no data, so
it is open like `/docs`; its requests send the API key typed into it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = (Path(__file__).with_name("playground.html")).read_text(encoding="utf-8")


def playground_router() -> APIRouter:
    """The playground page; an app includes it with `app.include_router(playground_router())`."""
    router = APIRouter()

    @router.get("/playground", tags=["gallery"], response_class=HTMLResponse)
    def playground() -> HTMLResponse:
        """An HTML page: upload an image, see its foreground map, noise level, views and the pair's quality."""
        return HTMLResponse(PAGE)

    return router
