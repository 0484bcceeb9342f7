"""Open a page in a real headless Chromium and report what it rendered: for the tests of report.html.

Debian's `chromium` package (`make test` installs it: see the Makefile's `browser` target) driven by PyPI's
`playwright`, whose wheel carries its own driver: `playwright install` is never run, no browser is downloaded.

    from browser import chromium_or_skip, render, screenshot

    def test_report(tmp_path):
        chromium_or_skip()
        page = render(tmp_path / "report.html")
        assert not page.problems(), page.problems()
        assert page.tables >= 1

Nothing outside the page loads: every request that is not the page's own file or a data: URI is aborted before
it leaves the browser, and listed in `requests_outside`; the browser's DNS resolves nothing as a second guard.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["RenderedImage", "RenderedPage", "chromium_executable", "chromium_or_skip", "render", "screenshot"]

INSTALL_HINT = "Chromium not installed: apt-get install chromium (as root: make browser)"
PLAYWRIGHT_HINT = "playwright not installed: .venv/bin/pip install -e '.[test]'"
# Set (to 1) where a missing browser must fail the run instead of skipping it: .ci/run sets it.
REQUIRE_ENV = "GRASPCHECK_REQUIRE_BROWSER"
# A browser of one's own: the path of a Chromium or Chrome executable.
EXECUTABLE_ENV = "GRASPCHECK_CHROMIUM"

# As root in a container, with no display, no GPU and no network but the package registries.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
TIMEOUT_MS = 15_000

# Debian's /usr/bin/chromium is a shell wrapper that adds flags (extensions, GPU rasterisation) and prints a
# warning on some /dev/shm mounts: the binary itself comes first.
_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class RenderedImage(NamedTuple):
    """One <img>: its alt text (or the first 40 characters of its src), its decoded size, and img.complete.

    A broken image is complete with natural size 0 x 0."""

    name: str
    natural_width: int
    natural_height: int
    complete: bool

    @property
    def decoded(self) -> bool:
        return self.complete and self.natural_width > 0 and self.natural_height > 0


@dataclass
class RenderedPage:
    url: str
    title: str
    tables: int
    images: list[RenderedImage]
    text: str  # document.body.innerText
    console_errors: list[str] = field(default_factory=list)  # console.error and the browser's own errors
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page's scripts
    requests_outside: list[str] = field(default_factory=list)  # blocked: neither the page's file nor data:

    @property
    def broken_images(self) -> list[RenderedImage]:
        return [im for im in self.images if not im.decoded]

    def problems(self) -> list[str]:
        """Everything that should not happen on a self-contained page, one line each: [] when it rendered cleanly."""
        out = [f"image not decoded: {im}" for im in self.broken_images]
        out += [f"console error: {m}" for m in self.console_errors]
        out += [f"page error: {m}" for m in self.page_errors]
        out += [f"request outside the file: {u}" for u in self.requests_outside]
        return out


def chromium_executable() -> str | None:
    """The Chromium to drive: $GRASPCHECK_CHROMIUM, else the first of Debian's and the usual names found; None if none."""
    own = os.environ.get(EXECUTABLE_ENV)
    if own:
        return own if shutil.which(own) or Path(own).is_file() else None
    for name in _CANDIDATES:
        found = shutil.which(name) if "/" not in name else (name if os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    """The browser executable, or a skip that names what is missing (a failure where $GRASPCHECK_REQUIRE_BROWSER is set)."""
    import pytest

    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = PLAYWRIGHT_HINT
    exe = chromium_executable()
    if missing is None and exe is None:
        missing = INSTALL_HINT if not os.environ.get(EXECUTABLE_ENV) else f"{EXECUTABLE_ENV}={os.environ[EXECUTABLE_ENV]} not found"
    if missing:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{missing} ({REQUIRE_ENV} is set)")
        pytest.skip(missing)
    return exe


class _Session:
    """One browser, one page on html_path, with outside requests blocked and recorded."""

    def __init__(self, html_path: Path, width: int, height: int):
        self.path = Path(html_path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(self.path)
        self.url = self.path.as_uri()
        self.width, self.height = width, height
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.requests_outside: list[str] = []

    def _own(self, url: str) -> bool:
        return url.startswith("data:") or url.split("#", 1)[0] == self.url

    def _outside(self, url: str) -> None:
        if not self._own(url) and url not in self.requests_outside:
            self.requests_outside.append(url)

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        exe = chromium_executable()
        if exe is None:
            raise RuntimeError(INSTALL_HINT)
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=exe, args=FLAGS, timeout=TIMEOUT_MS)
            ctx = self._browser.new_context(
                viewport={"width": self.width, "height": self.height}, device_scale_factor=1, service_workers="block"
            )
            ctx.set_default_timeout(TIMEOUT_MS)
            ctx.route("**/*", self._route)
            ctx.route_web_socket("**/*", self._route_ws)
            page = ctx.new_page()
            page.on("request", lambda req: self._outside(req.url))
            page.on("console", self._console)
            page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
            self.page = page
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _route(self, route) -> None:
        url = route.request.url
        if self._own(url):
            route.continue_()
        else:
            self._outside(url)
            route.abort("blockedbyclient")

    def _route_ws(self, ws) -> None:
        # Never connected to its server: recorded, then closed from the page's side.
        self._outside(ws.url)
        ws.close(code=1008, reason="blocked by the test harness")

    def _console(self, msg) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            where = loc.get("url", "")
            self.console_errors.append(f"{msg.text}" + (f" ({where})" if where and where != self.url else ""))

    def load(self) -> None:
        self.page.goto(self.url, wait_until="load")
        # Fonts and every <img>, decoded or failed, before anything is measured.
        self.page.evaluate(
            """async () => {
                await document.fonts.ready;
                await Promise.all([...document.images].map(im => im.decode().catch(() => null)));
            }"""
        )

    def __exit__(self, *exc) -> None:
        browser, pw = getattr(self, "_browser", None), getattr(self, "_pw", None)
        try:
            if browser is not None:
                browser.close()
        finally:
            if pw is not None:
                pw.stop()


def render(html_path: Path, width: int = 1280, height: int = 800) -> RenderedPage:
    """Open html_path (file://) in headless Chromium, wait for load, fonts and images, and report what rendered."""
    with _Session(html_path, width, height) as s:
        s.load()
        got = s.page.evaluate(
            """() => ({
                title: document.title,
                tables: document.querySelectorAll('table').length,
                images: [...document.images].map(im => [
                    im.alt || (im.getAttribute('src') || '').slice(0, 40),
                    im.naturalWidth, im.naturalHeight, im.complete]),
                text: document.body ? document.body.innerText : '',
            })"""
        )
        return RenderedPage(
            url=s.url,
            title=got["title"],
            tables=got["tables"],
            images=[RenderedImage(*im) for im in got["images"]],
            text=got["text"],
            console_errors=list(s.console_errors),
            page_errors=list(s.page_errors),
            requests_outside=list(s.requests_outside),
        )


def screenshot(html_path: Path, png_path: Path, width: int = 1280, full_page: bool = True, height: int = 800) -> Path:
    """A PNG of html_path as headless Chromium draws it (outside requests blocked), for the docs; returns png_path."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with _Session(html_path, width, height) as s:
        s.load()
        s.page.screenshot(path=str(png_path), full_page=full_page)
    return png_path


if __name__ == "__main__":  # python tests/browser.py report.html [shot.png]: a quick look by hand
    import sys

    page = render(Path(sys.argv[1]))
    print(f"{page.title!r}: {page.tables} tables, {len(page.images)} images; problems: {page.problems() or 'none'}")
    if len(sys.argv) > 2:
        print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
