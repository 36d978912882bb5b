"""A contact sheet of generation results: per image its original, foreground map and generated views.

`render_grid` draws one row per manifest row (see `genview generate-dataset`)::

    +-----------+-----------+-----------+-----------+
    | original  | foreground| view 0    | view 1    |   header (HEADER_H px)
    +-----------+-----------+-----------+-----------+
    | [thumb]   | [thumb]   | [thumb]   | [thumb]   |   thumb × thumb tiles, PAD px apart
    | path  fg=0.412  level=200  q=0.83             |   caption (CAPTION_H px)
    +-----------+-----------+-----------+-----------+

The sheet is `PAD + cols·(thumb + PAD)` wide and `HEADER_H + rows·(thumb + CAPTION_H + PAD)` high, where
`cols = 2 + max(1, most views in any row)`. An object that cannot be read (absent, invalid key, not an
image) becomes a grey tile that says why, so one bad row never loses the whole sheet.
"""

from __future__ import annotations

import io
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from genview.schemas import ManifestRow
from genview.store import InvalidKey, ObjectNotFound, ObjectStore

PAD = 8
HEADER_H = 20
CAPTION_H = 18
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (128, 128, 128)
TEXT = (20, 20, 20)
PLACEHOLDER_TEXT = (255, 255, 255)


def grid_size(num_rows: int, max_views: int, thumb: int = 160) -> tuple[int, int]:
    """(width, height) of the sheet `render_grid` draws for `num_rows` rows with at most `max_views` views."""
    cols = 2 + max(1, max_views)
    return PAD + cols * (thumb + PAD), HEADER_H + num_rows * (thumb + CAPTION_H + PAD)


def fmt(value, digits: int) -> str:
    """A number with `digits` decimals, integers as integers, anything else as text ('?' when absent)."""
    if value is None:
        return "?"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}"
    return str(value)


@dataclass(frozen=True)
class GalleryItem:
    """One generation result as both renderers show it (contact sheet here, HTML page in the generator service).

    Built leniently from manifest rows or stored result documents: a missing or odd value shows as text,
    never as an error, so one bad row never loses the gallery.
    """

    name: str  # the manifest path, or the result's store location
    sha: str | None = None
    fg_map: str | None = None
    views: tuple = ()  # store keys
    fg_ratio: object = None
    noise_level: object = None
    q: object = None  # one number, or one per view
    details: tuple = ()  # (label, value) shown by the page: fg basis, seed, size

    @classmethod
    def from_row(cls, row: ManifestRow | dict) -> GalleryItem:
        """An item of a `generate-dataset` manifest row."""
        r = row.model_dump() if isinstance(row, ManifestRow) else row
        views = r.get("views") if isinstance(r.get("views"), list) else []
        return cls(str(r.get("path", "")), r.get("sha256"), r.get("fg_map"), tuple(views), r.get("fg_ratio"),
                   r.get("noise_level"), r.get("q"))

    @classmethod
    def from_result(cls, name: str, sha: str, meta: dict) -> GalleryItem:
        """An item of a stored result document (`views/<sha>/<phash>/meta.json`)."""
        views = meta.get("views") if isinstance(meta.get("views"), list) else []
        keys = tuple(v.get("key") if isinstance(v, dict) else v for v in views)
        per_view_q = [v["q"] for v in views if isinstance(v, dict) and "q" in v]
        q = meta["q"] if "q" in meta else (per_view_q or None)
        details = tuple((k.replace("_", " "), meta[k]) for k in ("fg_basis", "seed", "size") if k in meta)
        return cls(name, sha, meta.get("fg_map"), keys, meta.get("fg_ratio"), meta.get("noise_level"), q, details)

    def caption_fields(self) -> list[tuple[str, str]]:
        """(label, formatted value) of fg ratio, noise level and, when known, q."""
        fields = [("fg", fmt(self.fg_ratio, 3)), ("level", fmt(self.noise_level, 0))]
        if isinstance(self.q, (list, tuple)):
            fields.append(("q", ",".join(fmt(v, 2) for v in self.q)))
        elif self.q is not None:
            fields.append(("q", fmt(self.q, 2)))
        return fields

    def caption(self) -> str:
        """`name  fg=…  level=…  [q=…]`: the contact sheet's caption line."""
        return "  ".join(p for p in [self.name, *(f"{k}={v}" for k, v in self.caption_fields())] if p)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, shortened with '…' until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _placeholder(thumb: int, reason: str, font) -> Image.Image:
    """A grey tile with `reason` written in its middle."""
    tile = Image.new("RGB", (thumb, thumb), PLACEHOLDER)
    draw = ImageDraw.Draw(tile)
    text = _fit_text(draw, reason, font, thumb - 4)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((thumb - (right - left)) / 2 - left, (thumb - (bottom - top)) / 2 - top), text,
              fill=PLACEHOLDER_TEXT, font=font)
    return tile


def _thumbnail(data: bytes, thumb: int) -> Image.Image:
    """`data` decoded and scaled to fit a thumb × thumb tile (aspect kept, centred on white)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (thumb, thumb))  # JPEG: decode at reduced scale
        rgb = ImageOps.contain(img.convert("RGB"), (thumb, thumb))
    tile = Image.new("RGB", (thumb, thumb), BACKGROUND)
    tile.paste(rgb, ((thumb - rgb.width) // 2, (thumb - rgb.height) // 2))
    return tile


def _tile(fetch: Callable[[], bytes], thumb: int, font) -> Image.Image:
    """The thumbnail of what `fetch` returns, or a placeholder saying why there is none."""
    try:
        data = fetch()
    except (ObjectNotFound, FileNotFoundError, KeyError, TypeError):
        return _placeholder(thumb, "missing", font)
    except InvalidKey:
        return _placeholder(thumb, "invalid key", font)
    except OSError:
        return _placeholder(thumb, "unreadable", font)
    try:
        return _thumbnail(data, thumb)
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return _placeholder(thumb, "not an image", font)


def _store_fetch(store: ObjectStore, key) -> Callable[[], bytes]:
    def fetch() -> bytes:
        if not isinstance(key, str) or not key:
            raise ObjectNotFound(str(key))
        return store.get(key)
    return fetch


def render_grid(rows: Sequence[ManifestRow | dict], store: ObjectStore,
                read_original: Callable[[ManifestRow | dict], bytes], thumb: int = 160) -> Image.Image:
    """One row per manifest row: original, foreground map, generated view(s), and a caption.

    `read_original(row)` returns the bytes of the row's original image;
    the foreground map and views are read from `store`. Missing or unreadable objects are drawn as grey
    "missing" tiles. The size is `grid_size(len(rows), most views, thumb)`.
    """
    if thumb < 16:
        raise ValueError(f"thumb must be at least 16 pixels, not {thumb}")
    rows = list(rows)
    items = [GalleryItem.from_row(row) for row in rows]
    max_views = max((len(item.views) for item in items), default=0)
    width, height = grid_size(len(items), max_views, thumb)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    headers = ["original", "foreground", *(f"view {i}" for i in range(max(1, max_views)))]
    for col, label in enumerate(headers):
        x = PAD + col * (thumb + PAD)
        draw.text((x, 4), _fit_text(draw, label, font, thumb), fill=TEXT, font=font)

    for r, (row, item) in enumerate(zip(rows, items)):
        y = HEADER_H + r * (thumb + CAPTION_H + PAD)
        tiles = [_tile(lambda row=row: read_original(row), thumb, font),
                 _tile(_store_fetch(store, item.fg_map), thumb, font),
                 *(_tile(_store_fetch(store, key), thumb, font) for key in item.views)]
        for col, tile in enumerate(tiles):
            sheet.paste(tile, (PAD + col * (thumb + PAD), y))
        text = _fit_text(draw, item.caption(), font, width - 2 * PAD)
        draw.text((PAD, y + thumb + 3), text, fill=TEXT, font=font)
    return sheet
