"""URLs in answers: from `GENVIEW_PUBLIC_BASE_URL` when set, else relative — never from the request's `Host`."""

from __future__ import annotations

from genview.settings import Settings


class Urls:
    """Builds the URLs this service hands out."""

    def __init__(self, settings: Settings):
        self.base = (settings.public_base_url or "").rstrip("/")

    def path(self, path: str) -> str:
        """`path` (starting with /) under the public base URL."""
        return f"{self.base}{path}"

    def view(self, key: str) -> str:
        """The `/views/...` URL of a stored view key `views/...`."""
        return self.path(f"/views/{key.removeprefix('views/')}")
