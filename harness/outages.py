"""A file store made unusable and brought back, as an unmounted or failed volume would be (works as root, unlike
chmod): its folder is moved aside and a plain file takes its place, so every read, write and listing fails."""

from __future__ import annotations

import os
from pathlib import Path


class StoreFolderOutage:
    """`down()` breaks the file store rooted at `folder`; `up()` puts it back unchanged."""

    def __init__(self, folder: Path):
        self.folder, self._aside = Path(folder), Path(f"{folder}.aside")

    def down(self) -> None:
        os.rename(self.folder, self._aside)
        self.folder.write_bytes(b"")

    def up(self) -> None:
        self.folder.unlink()
        os.rename(self._aside, self.folder)
