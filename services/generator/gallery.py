"""`GET /gallery`: an HTML page of the generation results in the store, and `GET /inputs/{sha}` for originals.

The page needs nothing outside the service: inline CSS, one inline script, and images from this app's
own `/inputs/{sha}` and `/views/{key}` routes.
"""

from __future__ import annotations

import html
import io
import json
import re
from urllib.parse import quote

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from genview.gallery import GalleryItem, fmt
from genview.schemas import ErrorBody
from genview.store import META_KEY, ObjectNotFound, ObjectStore, input_key, validate_key
from genview.view_encoding import MEDIA_TYPES, is_view_key
from services.errors import ApiError

SHA = re.compile(r"[0-9a-f]{64}")
MAX_LIMIT = 500

CSS = """
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 4px}
p.note{color:#666;font-size:13px;margin:0 0 16px}
section.result{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin:0 0 12px}
.tiles{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;text-align:center;font-size:12px;color:#555}
figure img{display:block;width:160px;height:160px;object-fit:contain;background:#eee;border:1px solid #ccc}
.missing{width:160px;height:160px;display:flex;align-items:center;justify-content:center;background:#888;color:#fff}
.caption{font-size:13px;margin-top:6px}
.caption code{font-size:12px;color:#666}
.error{color:#a00}
"""

# Counts the images that really decoded once everything has loaded; headless tests read the count back.
SCRIPT = """
window.addEventListener("load", function () {
  var n = 0;
  document.querySelectorAll("img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { n += 1; }
  });
  document.body.dataset.loaded = String(n);
});
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _view_url(key) -> str | None:
    """The `/views/...` URL of a view key stored in a result document, or None if the key is not valid."""
    if not isinstance(key, str) or not is_view_key(key):
        return None
    try:
        validate_key(key)
    except ValueError:
        return None
    return "/views/" + quote(key.removeprefix("views/"))


def _figure(url: str | None, label: str) -> str:
    if url is None:
        return f'<figure><div class="missing">missing</div>{_esc(label)}</figure>'
    return f'<figure><img src="{_esc(url)}" alt="{_esc(label)}">{_esc(label)}</figure>'


def _result_html(key: str, meta) -> str:
    """One result: original, foreground map, views, then the shared caption fields and details."""
    sha, phash = META_KEY.fullmatch(key).groups()
    original = _figure(f"/inputs/{sha}" if SHA.fullmatch(sha) else None, "original")
    if not isinstance(meta, dict):
        return (f'<section class="result"><div class="tiles">{original}</div>'
                f'<div class="caption error">unreadable result document <code>{_esc(key)}</code></div></section>')
    item = GalleryItem.from_result(f"{sha[:12]}…/{phash[:8]}…", sha, meta)
    figures = [original, _figure(_view_url(item.fg_map), "foreground"),
               *(_figure(_view_url(k), f"view {i}") for i, k in enumerate(item.views))]
    caption = [f"{_esc(label)} <b>{_esc(value)}</b>" for label, value in item.caption_fields()]
    caption += [f"{_esc(label)} {_esc(fmt(value, 3))}" for label, value in item.details]
    caption.append(f"<code>{_esc(item.name)}</code>")
    return (f'<section class="result"><div class="tiles">{"".join(figures)}</div>'
            f'<div class="caption">{" · ".join(caption)}</div></section>')


def render_gallery(store: ObjectStore, limit: int) -> str:
    """The gallery page: the last `limit` result documents in the store's sorted key order."""
    keys = [k for k in store.list("views") if k.endswith("/meta.json") and META_KEY.fullmatch(k)]
    shown = keys[-limit:]
    sections = []
    for key in shown:
        try:
            meta = json.loads(store.get(key))
        except (ObjectNotFound, ValueError):
            meta = None
        sections.append(_result_html(key, meta))
    if sections:
        note = (f"{len(shown)} of {len(keys)} results, the last {limit} in key order "
                f"(sha256, then parameter hash; the store keeps no creation time).")
        body = "".join(sections)
    else:
        note = "No results yet: submit an image to POST /generate and come back."
        body = '<p class="empty">No generation results yet.</p>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>GenView gallery</title><style>{CSS}</style></head>"
            f"<body data-results=\"{len(shown)}\"><h1>GenView gallery</h1><p class=\"note\">{_esc(note)}</p>"
            f"{body}<script>{SCRIPT}</script></body></html>")


def add_gallery_route(app: FastAPI, store: ObjectStore) -> None:
    """`GET /gallery` (HTML page of the latest results) and `GET /inputs/{sha}` (original images) on `app`.

    "Latest" means the last `limit` result documents (`views/<sha>/<phash>/meta.json`) in the store's
    sorted key order: keys are content addresses and the store records no creation time, so this is a
    stable, deterministic selection rather than a true most-recent-first one.
    """

    @app.get("/gallery", tags=["gallery"], response_class=HTMLResponse)
    def gallery(limit: int = Query(50, ge=1, le=MAX_LIMIT, description="how many results to show")):
        """An HTML page of the latest results: original, foreground map, views, fg ratio and noise level."""
        return HTMLResponse(render_gallery(store, limit))

    @app.get("/inputs/{sha}", tags=["gallery"], response_class=Response, responses={
        200: {"description": "the image", "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}},
        304: {"description": "not modified (ETag)"},
        **{code: {"model": ErrorBody, "description": text} for code, text in ((400, "not a SHA-256"),
                                                                             (404, "no such input"))}})
    def get_input(request: Request,
                  sha: str = Path(..., description="SHA-256 of the input image, 64 lowercase hex characters",
                                  json_schema_extra={"pattern": f"^{SHA.pattern}$"})):  # checked below: a 400
        """An original input image by its SHA-256 (immutable, with an ETag)."""
        if not SHA.fullmatch(sha):
            raise ApiError(400, "invalid_sha", "sha must be 64 lowercase hexadecimal characters")
        headers = {"ETag": f'"{sha}"', "Cache-Control": "public, max-age=31536000, immutable",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == headers["ETag"] and store.exists(input_key(sha)):
            return Response(status_code=304, headers=headers)
        try:
            data = store.get(input_key(sha))
        except ObjectNotFound:
            raise ApiError(404, "unknown_input", f"no input {sha}") from None
        try:
            with Image.open(io.BytesIO(data)) as img:
                media_type = Image.MIME.get(img.format or "", "application/octet-stream")
        except Exception:  # stored bytes PIL cannot identify: serve them as opaque bytes
            media_type = "application/octet-stream"
        return Response(data, media_type=media_type, headers=headers)
