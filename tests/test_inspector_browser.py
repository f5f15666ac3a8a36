"""The inspector page in a real browser: Playwright for Python driving Debian's chromium.

Never `playwright install`: the browser is the system's (`require("chromium")` skips, or fails
under CI, when it is missing). Screenshots of each state are kept under the test's tmp dir and
copied to /tmp/inspector-shots/ for people to look at.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from allm_proxy import Engine
from allm_proxy.config import CassetteSettings
from allm_proxy.server.app import create_inspect_app
from tests.support.asgi_server import running_proxy, serve_asgi
from tests.support.images import half_transparent_mask, noise_png
from tests.support.system_parts import require
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # a browser (Debian's chromium)

SHOTS = Path("/tmp/inspector-shots")
INJECTION = "<img src=x onerror=alert(1)>"
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = require("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page, with every console error, dialog and request host it produced."""

    def __init__(self, page: Any, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.hosts: set[str] = set()
        page.on("console", lambda m: self._console(m.type, m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.hosts.add(urlsplit(r.url).netloc))
        page.on("dialog", self._dialog)

    def _console(self, kind: str, text: str) -> None:
        if kind == "error":
            self.errors.append(text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
        return path


@contextmanager
def watched(browser: Any, url: str, tmp_path: Path) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    view = Watched(page, tmp_path)
    try:
        page.goto(url + "/allm/")
        yield view
    finally:
        context.close()  # closes the live feed before the proxy stops


def sdk(url: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1", api_key="sk-test-browser", max_retries=0, default_headers=headers or None
    )


def wait_until(page: Any, expression: str, arg: Any = None) -> None:
    """Poll `expression` from Python until it is true (bounded). Playwright's own wait_for_function
    re-evaluates its predicate with eval inside the page, which the page's CSP rightly forbids."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(expression, arg):
        assert time.monotonic() < deadline, f"not true within {WAIT_MS} ms: {expression}"
        time.sleep(0.05)


def loaded(page: Any, selector: str) -> None:
    """Wait until an <img> matching `selector` has really decoded."""
    decoded = "sel => { const i = document.querySelector(sel); return !!(i && i.complete && i.naturalWidth > 0); }"
    wait_until(page, decoded, selector)


def test_live_traffic_thumbnails_detail_and_mask_overlay(browser: Any, tmp_path: Path) -> None:
    image, mask = noise_png((96, 96)), half_transparent_mask((96, 96))
    with running_proxy(Engine()) as url, watched(browser, url, tmp_path) as view:
        page = view.page
        page.wait_for_selector("#live.on", timeout=WAIT_MS)
        view.shot("01-empty")
        sdk(url).images.generate(prompt="a watercolor kestrel", size="256x256")
        page.wait_for_selector(".entry .thumb", timeout=WAIT_MS)  # arrived live: no reload
        loaded(page, ".entry .thumb")
        sdk(url, **{"X-ALLM-Session": "edits"}).images.edit(
            image=("in.png", image, "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="add a hat",
            size="256x256",
        )
        wait_until(page, "() => document.querySelectorAll('.entry').length === 2")
        assert page.locator(".entry").first.locator(".op").text_content() == "edit"  # newest first
        loaded(page, ".entry .thumb.mask")
        view.shot("02-traffic")

        page.locator(".entry", has_text="a watercolor kestrel").click()
        loaded(page, "#detail-pane img.full")
        width = page.eval_on_selector("#detail-pane img.full", "i => i.naturalWidth")
        params = page.locator("#detail-pane pre").last.text_content() or ""
        view.shot("03-detail-generate")
        page.locator(".entry", has_text="add a hat").click()
        loaded(page, ".overlay img.mask-layer")
        view.shot("04-detail-edit-mask-overlay")

        page.check("#f-errors")
        assert page.locator(".entry").count() == 0
        page.uncheck("#f-errors")
        page.fill("#f-prompt", "hat")
        assert page.locator(".entry").count() == 1
    assert width == 256
    assert '"size": "256x256"' in params and '"prompt": "a watercolor kestrel"' in params
    assert view.errors == []
    assert view.hosts == {urlsplit(url).netloc}


def test_a_script_in_a_prompt_shows_as_text(browser: Any, tmp_path: Path) -> None:
    with running_proxy(Engine()) as url, watched(browser, url, tmp_path) as view:
        page = view.page
        page.wait_for_selector("#live.on", timeout=WAIT_MS)
        sdk(url).images.generate(prompt=INJECTION, size="256x256")
        page.wait_for_selector(".entry .prompt", timeout=WAIT_MS)
        page.locator(".entry").first.click()
        page.wait_for_selector("#detail-pane dl.facts", timeout=WAIT_MS)
        shown = page.locator(".entry .prompt").text_content()
        injected = page.locator("img[src='x']").count()
        view.shot("05-script-prompt-as-text")
    assert shown == INJECTION
    assert injected == 0 and view.dialogs == []
    assert view.hosts == {urlsplit(url).netloc}


@pytest.fixture
def tour(tmp_path: Path) -> tuple[Path, str]:
    """A cassette directory holding `tour.json` (a generate and an edit), and the stopped upstream's URL."""
    directory = tmp_path / "cassettes"
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        record_cassette(directory, upstream_url)
    return directory, upstream_url


def record_cassette(directory: Path, upstream_url: str) -> None:
    engine = Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": "sk-test-browser-up"},
        cassettes=CassetteSettings(directory=str(directory), record_mode="once"),
    )
    with running_proxy(engine) as url:
        client = sdk(url, **{"X-ALLM-Cassette": "tour"})
        client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk", size="1024x1024")
        client.images.edit(
            model="gpt-image-1", image=("in.png", noise_png((64, 64)), "image/png"), prompt="make it night"
        )


def test_the_cassettes_tab_of_allm_proxy_inspect_shows_interactions_with_thumbnails(
    browser: Any, tmp_path: Path, tour: tuple[Path, str]
) -> None:
    directory, _ = tour
    with serve_asgi(create_inspect_app(directory)) as url, watched(browser, url, tmp_path) as view:
        page = view.page
        page.wait_for_selector("#cassettes .entry", timeout=WAIT_MS)  # inspect opens on its cassettes
        loaded(page, "#cassettes .entry .thumb")
        rows = page.locator("#cassettes .entry").count()
        heading = page.locator("#cassettes .cassette h3").first.text_content() or ""
        view.shot("06-cassettes-tab")
        page.locator("#cassettes .entry", has_text="make it night").click()
        loaded(page, "#detail-pane img.full")
        view.shot("07-cassette-interaction")
        blocked = view.page.request.get(url + "/v1/models").status
    assert rows == 2 and heading.startswith("tour.json")
    assert blocked == 404  # inspect serves no /v1 routes
    assert view.errors == []
    assert view.hosts == {urlsplit(url).netloc}


def test_a_cassette_miss_shows_the_request_and_the_nearest_recording_side_by_side(
    browser: Any, tmp_path: Path, tour: tuple[Path, str]
) -> None:
    directory, upstream_url = tour
    # The recording's upstream address (stopped now): only the prompt differs, and nothing is sent anywhere.
    engine = Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": "sk-test-browser-up"},
        cassettes=CassetteSettings(directory=str(directory), record_mode="none"),
    )
    with running_proxy(engine) as url, watched(browser, url, tmp_path) as view:
        page = view.page
        page.wait_for_selector("#live.on", timeout=WAIT_MS)
        with pytest.raises(openai.BadRequestError):
            sdk(url, **{"X-ALLM-Cassette": "tour"}).images.generate(
                model="gpt-image-1", prompt="a lighthouse at dawn", size="1024x1024"
            )
        page.wait_for_selector(".entry.error", timeout=WAIT_MS)
        page.locator(".entry.error").click()
        page.wait_for_selector("table.miss", timeout=WAIT_MS)
        differing = page.locator("table.miss tr.differs th").all_text_contents()
        prompt_row = page.locator("table.miss tr", has_text="prompt").all_text_contents()
        matchers = page.locator(".differs-list li").all_text_contents()
        view.shot("08-cassette-miss-side-by-side")
        page.click("#tab-cassettes")
        page.wait_for_selector("#cassettes .entry", timeout=WAIT_MS)
        view.shot("09-serve-cassettes-tab")
    assert differing == ["prompt"]
    assert "a lighthouse at dawn" in prompt_row[0] and "a lighthouse at dusk" in prompt_row[0]
    assert matchers and matchers[0].startswith("body")
    assert view.errors == []
