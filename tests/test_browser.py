"""The browser harness itself (tests/browser.py) catches what it must, on small hand-written pages in real Chromium."""

import base64
import io
import time

import pytest
from PIL import Image as PILImage

import browser
from browser import chromium_or_skip, render, screenshot


@pytest.fixture
def chromium():
    return chromium_or_skip()


def _png_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _page(tmp_path, body: str, name: str = "page.html"):
    path = tmp_path / name
    path.write_text(f"<!DOCTYPE html><html><head><meta charset=utf-8><title>Harness</title></head><body>{body}</body></html>",
                    encoding="utf-8")
    return path


def test_a_clean_page_with_a_table_and_an_embedded_png(chromium, tmp_path):
    path = _page(tmp_path, f"<h1>Report</h1><table><tr><th>metric</th><td>0.98</td></tr></table>"
                           f"<img alt='confusion' src='{_png_uri(37, 21)}'>")
    page = render(path)
    assert page.title == "Harness"
    assert page.tables == 1
    assert page.images == [("confusion", 37, 21, True)]
    assert page.images[0].decoded and not page.broken_images
    assert "Report" in page.text and "0.98" in page.text
    assert page.console_errors == [] and page.page_errors == [] and page.requests_outside == []
    assert page.problems() == []


def test_a_broken_data_uri_image_has_no_natural_size(chromium, tmp_path):
    path = _page(tmp_path, "<img alt='truncated' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA'>"
                           f"<img alt='fine' src='{_png_uri(4, 4)}'>")
    page = render(path)
    assert page.images[0] == ("truncated", 0, 0, True) and not page.images[0].decoded
    assert page.broken_images == [page.images[0]]
    assert page.images[1].decoded
    assert page.requests_outside == []  # a data: URI is the page's own
    assert any("truncated" in p for p in page.problems())


def test_a_script_that_throws_is_a_page_error(chromium, tmp_path):
    path = _page(tmp_path, "<p>before</p><script>throw new Error('report script failed')</script>")
    page = render(path)
    assert len(page.page_errors) == 1 and "report script failed" in page.page_errors[0]
    assert "before" in page.text


def test_console_error_is_recorded(chromium, tmp_path):
    path = _page(tmp_path, "<script>console.log('fine'); console.warn('meh'); console.error('bad thing')</script>")
    page = render(path)
    assert page.console_errors == ["bad thing"]
    assert page.page_errors == []


def test_anything_outside_the_file_is_listed_and_blocked_without_waiting(chromium, tmp_path):
    # A sibling file counts as outside too: the report must carry its images inside itself.
    (tmp_path / "logo.png").write_bytes(base64.b64decode(_png_uri(3, 3).split(",", 1)[1]))
    path = _page(tmp_path, "<img alt='remote' src='http://graspcheck.invalid/logo.png'>"
                           "<img alt='sibling' src='logo.png'>"
                           "<link rel=stylesheet href='https://cdn.graspcheck.invalid/style.css'>"
                           "<script>fetch('http://graspcheck.invalid/api').catch(() => {});"
                           "new WebSocket('ws://graspcheck.invalid/live')</script>")
    start = time.monotonic()
    page = render(path)
    assert time.monotonic() - start < 10
    assert set(page.requests_outside) == {
        "http://graspcheck.invalid/logo.png",
        (tmp_path / "logo.png").as_uri(),
        "https://cdn.graspcheck.invalid/style.css",
        "http://graspcheck.invalid/api",
        "ws://graspcheck.invalid/live",
    }
    assert [im.name for im in page.broken_images] == ["remote", "sibling"]
    # Aborted by the harness before leaving the browser, not merely failing to resolve.
    assert any("ERR_BLOCKED_BY_CLIENT" in m for m in page.console_errors)


def test_screenshot_is_a_png_of_the_whole_page(chromium, tmp_path):
    path = _page(tmp_path, "<div style='height:2000px;background:#eef'>tall</div>")
    png = screenshot(path, tmp_path / "shots" / "page.png", width=640)
    with PILImage.open(png) as image:
        assert image.format == "PNG"
        assert image.width == 640 and image.height >= 2000


def test_missing_chromium_skips_with_the_install_line(monkeypatch):
    monkeypatch.setattr(browser, "chromium_executable", lambda: None)
    monkeypatch.delenv(browser.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium not installed: apt-get install chromium"):
        chromium_or_skip()
    monkeypatch.setenv(browser.REQUIRE_ENV, "1")  # CI: a missing browser fails instead
    with pytest.raises(pytest.fail.Exception, match="Chromium not installed"):
        chromium_or_skip()
