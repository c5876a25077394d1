"""The live inspector in a real browser: headless Chromium, driven by Selenium, against a served runtime.

Chromium and its driver are Debian's (``chromium``, ``chromium-driver``; ``make
test`` installs them): Selenium is given ``/usr/bin/chromedriver``, so its
manager never downloads anything. Selenium's API blocks, so each call runs in
a thread (``trio.to_thread.run_sync``), each one short or bounded by a
``WebDriverWait``, while the server serves in the test's own tasks. Nothing
sleeps: every wait is on a condition of the page's DOM.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio

from streams import open_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import ModuleType

    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
TIMEOUT: Final = 60
WAIT: Final = 20
"""Seconds any one DOM condition may take to hold."""

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (make test installs them)",
)


def _start_browser(home: str) -> WebDriver:
    """Headless Chromium under Debian's chromedriver, its profile, HOME and TMPDIR in ``home``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in [
        "--headless=new",
        "--no-sandbox",  # as root (CI), Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={home}/profile",
    ]:
        options.add_argument(argument)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home}
    service = Service(executable_path=str(CHROMEDRIVER), env=env)
    return webdriver.Chrome(service=service, options=options)


@pytest.fixture
async def browser(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WebDriver]:
    """A headless Chromium, quit (with its driver) on every path."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # and never let Selenium Manager reach the network
    home = tempfile.mkdtemp(prefix="inspector-browser-")
    try:
        driver = await trio.to_thread.run_sync(_start_browser, home)
        try:
            yield driver
        finally:
            await trio.to_thread.run_sync(driver.quit)
    finally:
        shutil.rmtree(home, ignore_errors=True)


class Page:
    """The inspector's page in the browser: each method one blocking Selenium call, run in a thread."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn)

    async def wait_for(self, css: str, *, text: str | None = None) -> None:
        """Wait until an element matches ``css`` (holding ``text``, if given); the page may rebuild it meanwhile."""
        from selenium.webdriver.common.by import By

        def present(driver: WebDriver) -> bool:
            return any(text is None or text in element.text for element in driver.find_elements(By.CSS_SELECTOR, css))

        await self.call(lambda: self._wait().until(present, f"no {css!r} with {text!r}"))

    def _wait(self) -> WebDriverWait[WebDriver]:
        """A wait of :data:`WAIT` seconds that takes an element the page rebuilt meanwhile as not there yet."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT, ignored_exceptions=[StaleElementReferenceException])

    async def wait_gone(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.call(
            lambda: self._wait().until(
                lambda driver: not driver.find_elements(By.CSS_SELECTOR, css), f"{css!r} is still there"
            )
        )

    async def click(self, css: str) -> None:
        """Click the element ``css`` once it is there (found again if the page rebuilt it meanwhile)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        def clicked(driver: WebDriver) -> bool:
            try:
                driver.find_element(By.CSS_SELECTOR, css).click()
            except StaleElementReferenceException:
                return False
            return True

        await self.wait_for(css)
        await self.call(lambda: self._wait().until(clicked, f"cannot click {css!r}"))

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        await self.wait_for(css)
        await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).send_keys(text))


@pytest.mark.parametrize("token", [None, "s3cret"])
async def test_the_inspector_shows_the_tree_live_and_answers_cancels_and_closes_from_the_page(
    token: str | None, browser: WebDriver, load_example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    """The page (signing in with the token, if any) shows sessions and runs started by another client as
    they happen; approving a question from the page finishes its run; cancelling a run and closing a
    session from the page do so; a run's event log opens; a screenshot is saved."""
    example = load_example("inspector")
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    page = Page(browser)
    with trio.fail_after(TIMEOUT):
        async with (
            open_server(example.make_agent(), token=token) as server,
            httpx.AsyncClient(base_url=server.url, headers=headers, timeout=TIMEOUT) as client,
        ):
            await page.call(lambda: browser.get(f"{server.url}/inspect"))
            if token is not None:
                await page.type("#token", token)
                await page.click("#sign-in")
            await page.wait_for("#status.live", text="live")

            for sid in ["release", "batch", "chat", "research"]:
                assert (await client.post("/sessions", json={"id": sid})).status_code == 201
            await page.wait_for('.session[data-sid="research"]')  # sessions appear as they open
            for sid, prompt in [
                ("release", "deploy billing"),
                ("batch", "crunch 400"),
                ("research", "research cancel scopes"),
            ]:
                started = await client.post(f"/sessions/{sid}/runs", json={"input": prompt, "detach": True})
                assert started.status_code == 202
            chat = await client.post("/sessions/chat/runs", json={"input": "hello"})  # attached, to its end
            assert "RunFinished" in chat.text

            # The question waits on the page, on its session's row even while collapsed.
            approve = '.session[data-sid="release"] .question button[data-action="accept"]'
            await page.wait_for('.session[data-sid="release"] .question', text="Deploy billing to production?")
            for sid in ["batch", "research", "chat", "release"]:
                await page.click(f'.session[data-sid="{sid}"] .head .sid')  # expand
            await page.wait_for('.session[data-sid="batch"] tr.tool-call progress')  # crunch reports progress
            await page.wait_for('.session[data-sid="research"] .run', text="sub-agents: researcher")
            await page.wait_for('.session[data-sid="chat"] .run-state.completed')
            await page.wait_for('.session[data-sid="chat"] .run', text="model call 1")
            screenshot = tmp_path / "inspector.png"
            assert await page.call(lambda: browser.save_screenshot(str(screenshot)))
            assert screenshot.stat().st_size > 10_000
            if os.environ.get("INSPECTOR_SCREENSHOT"):  # how docs/inspector.png is made
                shutil.copyfile(screenshot, os.environ["INSPECTOR_SCREENSHOT"])

            # Approve from the page: the run finishes.
            await page.click(approve)
            await page.wait_for('.session[data-sid="release"] .run[data-rid="release-r1"] .run-state.completed')
            await page.wait_for('.session[data-sid="release"] .run', text="billing deployed")
            await page.wait_gone('.session[data-sid="release"] .question')
            assert server.sessions["release"].runs["release-r1"].finished

            # Its event log, from the page.
            await page.click('.session[data-sid="release"] button[data-action="log"][data-rid="release-r1"]')
            await page.wait_for("#log-events li", text="RunFinished")
            await page.click("#log-close")
            await page.wait_gone("#log:not([hidden])")

            # Cancel the crunching run, close the chat session.
            await page.click('.session[data-sid="batch"] button[data-action="cancel"]')
            await page.wait_for('.session[data-sid="batch"] .run[data-rid="batch-r1"] .run-state.cancelled')
            await page.click('.session[data-sid="chat"] button[data-action="close"]')
            await page.wait_gone('.session[data-sid="chat"]')
            assert "chat" not in server.sessions


async def test_the_inspector_pages_a_thousand_sessions(
    browser: WebDriver, load_example: Callable[[str], ModuleType]
) -> None:
    """With 1,000 sessions the page shows one page of 50, collapsed; paging and the filter reach the others,
    and a session opened meanwhile is counted."""
    from selenium.webdriver.common.by import By

    example = load_example("inspector")
    page = Page(browser)
    with trio.fail_after(TIMEOUT):
        async with open_server(example.make_agent(), max_sessions=None) as server:
            for n in range(1000):
                await server.open_session(f"s{n:04}")
            await page.call(lambda: browser.get(f"{server.url}/inspect"))
            await page.wait_for("#page", text="page 1 of 20 (1000 sessions)")
            shown = await page.call(lambda: browser.find_elements(By.CSS_SELECTOR, "#sessions .session"))
            assert len(shown) == 50
            assert await page.call(lambda: shown[0].get_attribute("data-sid")) == "s0000"
            await page.click("#next")
            await page.wait_for("#page", text="page 2 of 20")
            await page.wait_for('.session[data-sid="s0050"]')
            await page.type("#filter", "s0999")
            await page.wait_for("#page", text="page 1 of 1 (1 sessions)")
            await page.wait_for('.session[data-sid="s0999"]')
            await server.open_session("s1000")
            await page.wait_for("#totals", text="1001 sessions")
