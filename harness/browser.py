"""Headless Chromium driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so tests can use a page as a person does (choose a file,
click) without a WebDriver or a websocket library."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from harness.processes import terminate


class BrowserError(RuntimeError):
    """Chromium answered a command with an error, or a page did not reach a state in time."""


class Browser:
    """One headless Chromium with one page (tab); `close()` (or `with`) stops it."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 900):
        exe = shutil.which("chromium")
        if exe is None:
            raise BrowserError("Debian's chromium is not installed: `apt-get install -y chromium`")
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "--remote-debugging-pipe", "about:blank"]
        # the shell puts the pipe ends on fds 3 (commands in) and 4 (answers out), where Chromium expects them
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome}', exe, *flags],
                                     pass_fds=(to_chrome, from_chrome), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._ids, self._buffer = itertools.count(1), b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command (to the page's session when `session` is given) and return its result."""
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._next_message()
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _next_message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def page(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout_s: float = 30.0) -> None:
        """Navigate and wait until the document has loaded."""
        self.page("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout_s)

    def wait_for(self, expression: str, timeout_s: float) -> None:
        """Poll a JavaScript condition until it holds (BrowserError with the page's text when it never does)."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}; page text: "
                                   f"{self.evaluate('document.body ? document.body.innerText : null')!r:.2000}")
            time.sleep(0.2)

    def choose_file(self, selector: str, path: Path) -> None:
        """Put a file into an `<input type=file>`, as a person choosing it does (the input's events fire)."""
        root = self.page("DOM.getDocument")["root"]["nodeId"]
        node = self.page("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.page("DOM.setFileInputFiles", nodeId=node, files=[str(Path(path).resolve())])

    def screenshot(self) -> bytes:
        """A PNG of the page's viewport."""
        return base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        for fd in (self._write, self._read):
            os.close(fd)
        terminate(self.proc, 10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
