"""A real browser for the lab's HTML report (Debian's chromium, headless, through Playwright): the
page loaded with its console errors, outside requests and dialogs recorded; a screenshot checked to
be a real picture; how many elements of a kind were drawn. The fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless, as root (Playwright's own browser download cannot be reached).
    While it is open, Playwright runs an event loop in this thread: asyncio.run() fails here."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` (scripts/apt-packages.txt) installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@dataclass
class Loaded:
    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def _loader(browser: Browser) -> Iterator[Callable[[Path], Loaded]]:
    contexts = []

    def load_it(path: Path) -> Loaded:
        ctx = browser.new_context(viewport={"width": 1100, "height": 900})
        contexts.append(ctx)
        page = ctx.new_page()
        got = Loaded(page)
        page.on("console", lambda m: got.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: got.errors.append(f"page error: {e}"))
        page.on("request", lambda r: got.requests.append(r.url) if r.url != path.as_uri() else None)

        def on_dialog(d: Dialog) -> None:
            got.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        page.goto(path.as_uri(), wait_until="load")
        return got

    yield load_it
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[Path], Loaded]]:
    yield from _loader(browser)


@pytest.fixture
def open_page_once() -> Iterator[Callable[[Path], Loaded]]:
    """Like ``open_page``, with a browser of the test's own, closed when the test ends: for a module
    whose later tests run asyncio (the module-scoped browser keeps Playwright's loop in the thread)."""
    with chromium() as b:
        yield from _loader(b)


def screenshot_ok(page: Page, out: Path) -> None:
    page.screenshot(path=str(out), full_page=True)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width >= 1000 and height >= 600, (width, height)
    assert len(data) > 30_000, f"a {len(data)}-byte screenshot of a page of charts: blank?"


def drawn(page: Page, selector: str) -> int:
    """How many elements match and have a non-empty box on the page."""
    boxes = [el.bounding_box() for el in page.query_selector_all(selector)]
    return sum(1 for b in boxes if b is not None and b["width"] > 0 and b["height"] > 0)
